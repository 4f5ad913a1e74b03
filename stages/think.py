"""MF-Think: reasoning chains for challenging QA items, every step fact-checked against the song.

The logic is `mfpipe.think` (which items, the chains, the step checks, the 30 % rule); this stage is
the glue: it loads Music Flamingo (the step checker) and an LLM session on its worker, hands the batch
to `ChainMaker`, and turns each song's outcome into rows.

A dropped chain is not in the song's row; it becomes a rejects row (stage `think`; error
`too_many_wrong_steps`, `still_wrong_after_rewrite`, `wrong_answer`, `too_many_unverifiable_steps` or
`llm_<error>`; the message gives the ratios). A song whose every chain was dropped has only rejects.
When the LLM server fails for a song (connection, timeout, 5xx, model not found) the song is deferred:
the runner pauses the stage while it checks the server and redoes the song whole; any other failed
request makes the whole song one retryable reject.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mfpipe.backends.llm import OUTAGE_ERRORS, LlmConfig
from mfpipe.consistency import ConsistencyConfig
from mfpipe.pipeline.registry import register
from mfpipe.pipeline.stage import Deferred, Resources, StageSettings
from mfpipe.schemas import ModelRef, Reject, ThinkRecord
from mfpipe.stages._audiolm import AudioLMStage, AudioLMStageConfig
from mfpipe.think.chains import ChainMaker, Refused, Song
from mfpipe.think.config import ThinkSettings


class ThinkConfig(ThinkSettings, AudioLMStageConfig):
    """MF-Think: LLM reasoning chains for challenging QA items, every step fact-checked."""

    resources: Resources = Field(default_factory=Resources, description="What each worker asks Ray for.")


@register
class ThinkStage(AudioLMStage):
    name = "think"
    record = ThinkRecord
    requires = ("ingest", "synthesize", "filter")
    # lyrics: the words sung, for the chains of lyric and vocal questions.
    uses = ("mir", "lyrics")
    columns = {
        "ingest": ("song_id", "source", "processed_s", "truncated"),
        "synthesize": ("caption", "qa"),
        "filter": ("caption", "qa"),
        "mir": ("bpm", "meter", "key", "mode", "key_strength", "chords", "loudness_lufs", "sections"),
        "lyrics": ("text", "words", "has_vocals", "language", "vocal_regions", "outcome"),
    }
    config_model = ThinkConfig
    reads = {**AudioLMStage.reads, "llm": LlmConfig, "consistency": ConsistencyConfig}
    services = ("llm",)  # the same server synthesize uses (started once per run, shared)
    summary = "MF-Think: LLM reasoning chains for challenging items, each step fact-checked (audio-LM + MIR)"
    lm_role = "step_checker"
    stand_in = ("checks steps with", "its judgements are noise")
    extra_tools = ("openai",)

    @classmethod
    def banner_notes(cls, settings: StageSettings) -> list[str]:
        notes = super().banner_notes(settings)
        llm = settings.shared["llm"]
        if llm.base_url:
            notes.append(f"LLM {llm.model} at {llm.base_url}")
        elif llm.server.local_model:
            notes.append(f"chains from {llm.server.local_model}, a tiny local model: plumbing, not useful data")
        return notes

    @classmethod
    def counts(cls, record: ThinkRecord) -> dict[str, int]:
        steps = [step for chain in record.chains for step in chain.steps]
        return {"chains": len(record.chains), "steps": len(steps),
                "steps_checked_by_audio_lm": sum(s.checked_by == "audio_lm" and s.verdict != "unverifiable"
                                                 for s in steps)}

    # ------------------------------------------------------------ worker side
    def setup_stage(self) -> None:
        from mfpipe.backends.llm import LlmSession
        from mfpipe.prompts import load_prompt

        self.session = LlmSession(self.shared.llm)
        self.maker = ChainMaker(self.cfg, self.prompt, self.lm, self.session.llm, self.shared.consistency,
                                self.window_s)
        self.model_refs = [ModelRef(role="llm", name=self.session.llm.model), *self.model_refs]
        yes_no = load_prompt("audiolm_yes_no")
        cfg = self.cfg
        self.provenance_settings = self.settings_text({
            "llm": self.session.llm.settings(),
            "audio_lm": self.lm.settings(window_s=self.window_s, answer_format=f"{yes_no.id}.{yes_no.version}:"
                                         f"{yes_no.sha256[:12]}"),
            "think": {k: getattr(cfg, k) for k in ("max_chains_per_song", "select_audio_lm_wrong", "hard_skills",
                                                    "min_steps", "max_steps", "show_reference", "max_wrong_ratio",
                                                    "max_unverifiable_ratio", "rewrite_budget")},
            "gate": cfg.gate.checks,
            "step_check": cfg.step_check.model_dump(),
        })

    def teardown(self) -> None:
        if getattr(self, "session", None) is not None:
            self.session.close()

    def process_batch(self, rows: list[dict[str, Any]]) -> list[ThinkRecord | Reject | Deferred]:
        outcomes = self.session.run(self.maker.make(rows))
        return [result for row, outcome in zip(rows, outcomes) for result in self.results(row, outcome)]

    def results(self, row: dict[str, Any], song: Song | Refused) -> list[ThinkRecord | Reject | Deferred]:
        """A song's row (its kept chains) and a reject per dropped chain; or the song deferred / rejected."""
        if isinstance(song, Refused):
            return [self.reject(row, song.error, song.message, retryable=song.retryable)]
        if song.failure is not None:
            job, result = song.failure
            message = f"{job.which}: {result.message}"[:2000]
            if any(j.failed.error in OUTAGE_ERRORS for j in song.jobs if j.failed is not None):
                return [self.defer(row, "llm", message)]
            return [self.reject(row, f"llm_{result.error}", message, retryable=True)]
        rejects = [self.reject(row, error, message) for error, message in song.dropped]
        if song.jobs and not song.kept:
            return rejects
        notes = list(self.lm.notes()) + song.notes
        if not song.jobs:
            notes.append("no challenging item among the filter's kept QA items")
        record = ThinkRecord(song_id=row["song_id"], source=row["source"], chains=song.kept,
                             considered=len(song.jobs), dropped=len(rejects), usage=song.usage,
                             provenance=self.provenance(notes=notes))
        return [record, *rejects]
