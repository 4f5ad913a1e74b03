"""Synthesize: an LLM turns surface captions + MIR facts + lyrics into MF-Skills items.

Per song it writes a rich caption (six dimensions, ~`target_words` words),
structured metadata and question-answer pairs for all five skills (fallback
briefs for instrumentals and one-section songs), puts them through the gate's
checks (`mfpipe.lint`: a flagged part gets one repair request, then what is
still flagged is dropped), checks them against the MIR facts
(`mfpipe.consistency`) and stores the flags.

One song is several small requests, all sent at once: the caption, the
metadata, and one QA request per skill (seven in all). Why not one big
request: small models follow a small schema far better than one with a long
caption, eleven fields and ten questions; a failure costs one part's repair,
not the song's whole output; and seven short requests keep a server busier
than one long one. The parts share the system message and the song block as a
prefix, so vLLM's prefix cache reads the song once. The parts do not see each
other's output (the QA is grounded in the facts, not in a caption that may be
wrong).

The server: the stage declares the `llm` service; the runner opens it (driver
side, once per run): it checks `llm.base_url` or starts vLLM
(mfpipe.backends.vllm_server); the workers only get its URL. Each worker keeps one event loop and one `Llm` client; the
requests of a whole batch are in flight together, up to `llm.concurrency`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from mfpipe.backends.llm import OUTAGE_ERRORS, LlmConfig
from mfpipe.consistency import ConsistencyConfig, check_song
from mfpipe.lint import GateConfig, ItemGate
from mfpipe.pipeline.registry import register
from mfpipe.pipeline.stage import Deferred, Resources, Stage, StageConfig, StageSettings
from mfpipe.schemas import LlmUsage, ModelRef, Reject
from mfpipe.schemas.synthesize import (
    SKILLS,
    GateEvent,
    MetadataDraft,
    QaItem,
    SongMetadata,
    SynthesizeRecord,
    caption_draft,
    qa_draft,
)
from mfpipe.songfacts import (
    INSTRUMENTAL,
    SongInputs,
    is_instrumental,
    key_is_weak,
    measured,
    meter_text,
    skill_plan,
    song_inputs,
    structure_items,
)


class SynthesizeConfig(StageConfig):
    """Rich captions, structured metadata and five-skill QA from the surface captions + MIR facts."""

    resources: Resources = Field(default_factory=Resources, description="What each worker asks Ray for (a worker "
                                 "keeps llm.concurrency requests in flight).")
    prompt: str = Field("synthesize", description="Prompt id (latest version) or id.vN in prompts/.")
    target_words: int = Field(450, ge=20, description="Rich caption length the prompt asks for (paper: ~452).")
    caption_band: tuple[int, int] | None = Field(None, description="[fewest, most] words the prompt asks the "
                                                 "caption to have (production: [420, 520]); None: target_words "
                                                 "-10 % / +15 %.")
    caption_chars_per_word: float = Field(9.0, ge=4, description="Hard cap on the caption (JSON-schema "
                                          "maxLength), in characters per target word.")
    caption_min_ratio: float = Field(0.6, ge=0, le=1, description="A rich caption has at least this share of "
                                     "target_words (the schema's minLength; a shorter one gets one repair request, "
                                     "then the song is rejected as caption_too_short).")
    qa_open_per_skill: int = Field(2, ge=0, le=10, description="Open-ended questions per skill.")
    qa_choice_per_skill: int = Field(2, ge=0, le=10, description="Multiple-choice questions per skill.")
    fallback_open_per_skill: int = Field(1, ge=0, le=10, description="Open questions of a fallback skill (the "
                                         "melody of an instrumental instead of lyrics and vocals; development over "
                                         "time in a one-section song instead of comparing sections).")
    fallback_choice_per_skill: int = Field(1, ge=0, le=10, description="Multiple-choice questions of a fallback "
                                           "skill.")
    choice_options: int = Field(4, ge=2, le=6, description="Options per multiple-choice question.")
    open_answer_max_chars: int = Field(100, ge=10, le=300, description="Longest open answer (a short reference "
                                       "suits the exact-match accuracy reward).")
    ground_metadata: bool = Field(True, description="Replace the metadata's bpm/key/meter/structure with the MIR "
                                  "facts (null where MIR measured none: never the model's guess; the model's own "
                                  "values are still checked and flagged).")
    max_lyrics_chars: int = Field(4000, ge=0, description="Lyrics characters in the prompt (the rest is cut, "
                                  "with a note).")
    max_caption_windows: int = Field(40, ge=0, description="Surface-caption windows in the prompt.")
    max_chord_changes: int = Field(64, ge=0, description="Chords of one section's progression in the prompt (a "
                                   "repeating loop is shown once).")
    min_chord_s: float = Field(1.0, ge=0, description="Chords shorter than this are left out of the prompt "
                               "(passing or mis-heard chords invite wrong theory).")
    gate: GateConfig = Field(default_factory=GateConfig, description="The checks generated items pass "
                             "(mfpipe.lint): a flagged part gets one repair request, then flagged items are "
                             "dropped (a caption loses the flagged sentences).")

    @model_validator(mode="after")
    def _band(self) -> SynthesizeConfig:
        if self.caption_band and not (0 < self.caption_band[0] <= self.caption_band[1]):
            raise ValueError("caption_band must be [fewest, most] words with 0 < fewest <= most")
        return self

    def band(self) -> tuple[int, int]:
        """The caption length the prompt asks for, in words."""
        if self.caption_band:
            return self.caption_band
        return round(self.target_words * 0.9), round(self.target_words * 1.15)


@dataclass
class LlmRequest:
    """One request of one song: which part it makes, the messages, the schema model."""

    part: str  # caption | metadata | qa/<skill>
    messages: list[dict[str, str]]
    model: type
    n_open: int = 0  # a QA part's question counts (they differ per song: fallback skills)
    n_choice: int = 0


@register
class SynthesizeStage(Stage):
    name = "synthesize"
    record = SynthesizeRecord
    requires = ("ingest",)
    uses = ("caption", "mir", "lyrics")
    # The beat and downbeat lists are long and the prompt does not need them.
    columns = {
        "ingest": ("song_id", "source", "duration_s", "processed_s", "truncated"),
        "mir": ("bpm", "meter", "key", "mode", "key_strength", "chords", "loudness_lufs", "sections"),
        "caption": ("windows",),
        "lyrics": ("text", "words", "has_vocals", "language", "vocal_regions", "outcome"),
    }
    config_model = SynthesizeConfig
    reads = {"llm": LlmConfig, "consistency": ConsistencyConfig}
    services = ("llm",)  # the LLM endpoint, checked, or a vLLM server started for the run (pipeline.llm_service)
    summary = "LLM (vLLM): rich caption, metadata and five-skill QA from captions + MIR + lyrics"

    # ------------------------------------------------------------ driver side

    @classmethod
    def banner_notes(cls, settings: StageSettings) -> list[str]:
        llm = settings.shared["llm"]
        if llm.base_url:
            return [f"LLM {llm.model} at {llm.base_url}"]
        what = llm.server.local_model or llm.server.model or llm.model
        notes = [f"starts a vLLM server for {what} ({llm.server.python})"]
        if llm.server.local_model:
            notes.append(f"{what} is a tiny local model: its text tests the plumbing, it is not useful data")
        return notes

    # ------------------------------------------------------------ worker side
    def setup(self) -> None:
        from mfpipe.backends.llm import LlmSession
        from mfpipe.prompts import load_prompt

        self.prompt = load_prompt(self.cfg.prompt)
        self.tolerance = self.shared.consistency
        self.session = LlmSession(self.shared.llm)
        self.llm = self.session.llm
        self.model_refs = [ModelRef(role="llm", name=self.llm.model)]
        self.prompt_ref = self.prompt.ref()
        cfg = self.cfg
        self.provenance_settings = self.settings_text({
            **self.llm.settings(), "target_words": cfg.target_words, "caption_band": list(cfg.band()),
            "qa_open_per_skill": cfg.qa_open_per_skill, "qa_choice_per_skill": cfg.qa_choice_per_skill,
            "fallback_per_skill": [cfg.fallback_open_per_skill, cfg.fallback_choice_per_skill],
            "choice_options": cfg.choice_options, "ground_metadata": cfg.ground_metadata,
            "min_chord_s": cfg.min_chord_s, "gate": cfg.gate.model_dump(),
            "parts": ["caption", "metadata", *(f"qa/{s}" for s in SKILLS)]})

    def teardown(self) -> None:
        if getattr(self, "session", None) is not None:
            self.session.close()

    def process_batch(self, rows: list[dict[str, Any]]) -> list[SynthesizeRecord | Reject]:
        return self.session.run(self.process_async(rows))

    async def process_async(self, rows: list[dict[str, Any]]) -> list[SynthesizeRecord | Reject]:
        """Every request of every song in the batch in flight at once (bounded by the client)."""
        return list(await asyncio.gather(*(self._song(row) for row in rows)))

    # ------------------------------------------------------------ one song
    def inputs(self, row: dict[str, Any]) -> SongInputs:
        return song_inputs(row, max_lyrics_chars=self.cfg.max_lyrics_chars,
                           max_caption_windows=self.cfg.max_caption_windows,
                           max_chord_changes=self.cfg.max_chord_changes, min_chord_s=self.cfg.min_chord_s,
                           key_hedge_below=self.tolerance.key_hedge_below)

    def requests(self, row: dict[str, Any], song: SongInputs | None = None) -> list[LlmRequest]:
        """The requests that make one song's record (the benchmark replays exactly these)."""
        cfg, prompt = self.cfg, self.prompt
        song = song or self.inputs(row)
        prefix = prompt.call("song", facts=song.facts, untrusted_json=song.untrusted_json())

        def messages(task: str) -> list[dict[str, str]]:
            return [{"role": "system", "content": prompt.call("system")},
                    {"role": "user", "content": f"{prefix}\n\n{task}"}]

        max_chars = int(cfg.target_words * cfg.caption_chars_per_word)
        min_words = max(1, int(cfg.target_words * cfg.caption_min_ratio))
        fewest, most = cfg.band()
        caption_task = prompt.call("task_caption", target_words=cfg.target_words, min_words=fewest, max_words=most)
        metadata_task = prompt.call("task_metadata", instrumental=is_instrumental(row.get("lyrics")))
        out = [LlmRequest("caption", messages(caption_task), caption_draft(max_chars, min_words)),
               LlmRequest("metadata", messages(metadata_task), MetadataDraft)]
        for plan in skill_plan(row, cfg.qa_open_per_skill, cfg.qa_choice_per_skill, cfg.fallback_open_per_skill,
                               cfg.fallback_choice_per_skill):
            brief = plan.brief if prompt.has("repair_items") else plan.skill  # v1/v2 know no fallbacks
            task = prompt.call("task_qa", skill=brief, n_open=plan.n_open, n_choice=plan.n_choice,
                               n_options=cfg.choice_options)
            model = qa_draft(plan.n_open, plan.n_choice, cfg.choice_options, answer_chars=cfg.open_answer_max_chars)
            out.append(LlmRequest(f"qa/{plan.skill}", messages(task), model, plan.n_open, plan.n_choice))
        return out

    async def _song(self, row: dict[str, Any]) -> SynthesizeRecord | Reject | Deferred:
        song = self.inputs(row)
        if not song.present:
            return self.reject(row, "no_upstream",
                               "no surface caption, MIR facts or lyrics for this song: nothing to ground "
                               "the text on (run the caption, mir and lyrics stages first)", retryable=True)
        requests = self.requests(row, song)
        results = await asyncio.gather(*(self.llm.structured(r.messages, r.model, name=r.part) for r in requests))
        usage = LlmUsage()
        for res in results:
            usage.add(res.usage)
            usage.seconds = max(usage.seconds, res.usage.seconds)
        parts: dict[str, Any] = {}
        failed = []
        for req, res in zip(requests, results):
            value = res.value if res.ok else self._salvage(req, res, song.notes)
            if value is None:
                failed.append((req.part, res))
            if res.cut_off_retried:
                song.notes.append(f"{req.part}: cut off at max_tokens, asked again at low reasoning effort")
            parts[req.part] = value
        problem = self._failure(row, failed, song.notes)
        if problem is not None:
            return problem
        gated = await self._gate(row, requests, parts, usage, song.notes)
        if not parts["caption"].caption.strip():
            return self.reject(row, "caption_flagged", "every sentence of the rich caption failed the checks "
                               f"after one repair request: {'; '.join(e.message for e in gated)[:1800]}",
                               retryable=True)
        return self._record(row, song, parts, usage, gated)

    def _failure(self, row: dict[str, Any], failed: list[tuple[str, Any]],
                 notes: list[str]) -> Reject | Deferred | None:
        """A failed caption or metadata part (or a server outage) ends the song; a failed QA part only
        leaves its skill out, with a note (a cut-off or garbled skill costs that skill, not the song)."""
        if not failed:
            return None
        part, res = failed[0]
        more = f" (and {len(failed) - 1} more part(s) failed)" if len(failed) > 1 else ""
        if any(r.error in OUTAGE_ERRORS for _, r in failed):
            return self.defer(row, "llm", f"{part}: {res.message}{more}"[:2000])
        required = [(p, r) for p, r in failed if not p.startswith("qa/")]
        if not required:
            notes.extend(f"{p}: left out, the LLM's answer failed: {r.message}"[:300] for p, r in failed)
            return None
        part, res = required[0]
        if part == "caption" and res.error == "invalid_output" and "at least" in res.message:
            return self.reject(row, "caption_too_short", f"the rich caption is too short after one repair "
                               f"request: {res.message}{more}"[:2000], retryable=True)
        return self.reject(row, f"llm_{res.error}", f"{part}: {res.message}{more}"[:2000], retryable=res.retryable)

    def _salvage(self, request: LlmRequest, result: Any, notes: list[str]) -> Any:
        """A QA answer that still failed after its repair only because some multiple-choice
        item repeats an option: keep the other items (the skill stays covered), note the loss."""
        if not (request.part.startswith("qa/") and result.error == "invalid_output" and result.raw):
            return None
        cfg = self.cfg
        lenient = qa_draft(request.n_open, request.n_choice, cfg.choice_options, strict=False,
                           answer_chars=cfg.open_answer_max_chars)
        try:
            draft = lenient.model_validate_json(result.raw)
        except ValueError:
            return None
        choices = getattr(draft, "multiple_choice", None) or []
        kept = [q for q in choices if q.distinct]
        if not kept and not getattr(draft, "open", None):
            return None
        if len(kept) < len(choices):
            draft.multiple_choice = kept
            notes.append(f"{request.part}: dropped {len(choices) - len(kept)} multiple-choice item(s) "
                         f"whose options repeat")
        return draft

    # ------------------------------------------------------------ the gate
    async def _gate(self, row: dict[str, Any], requests: list[LlmRequest], parts: dict[str, Any], usage: LlmUsage,
                    notes: list[str]) -> list[GateEvent]:
        """The checks (`synthesize.gate`) on the caption and every QA item: a part with flagged items gets
        one repair request naming the problems; what is still flagged is dropped (a caption loses its
        flagged sentences), with the reason."""
        gate = ItemGate(measured(row), self.tolerance, self.cfg.gate.checks)
        flagged = [(req, gate.flags(req.part, parts[req.part])) for req in requests
                   if req.part != "metadata" and parts.get(req.part) is not None]
        flagged = [(req, flags) for req, flags in flagged if flags]
        can_repair = self.cfg.gate.repair and self.prompt.has("repair_items")
        repairs = await asyncio.gather(*(self._repair(req, parts[req.part], flags, usage) for req, flags in flagged)) \
            if can_repair else [None] * len(flagged)
        events: list[GateEvent] = []
        for (req, first), fixed in zip(flagged, repairs):
            after = gate.flags(req.part, fixed) if fixed is not None else first
            parts[req.part] = gate.drop(req.part, fixed if fixed is not None else parts[req.part], after, notes)
            events += gate.outcomes(first, after if fixed is not None else None)
        return events

    async def _repair(self, request: LlmRequest, draft: Any, flags: list, usage: LlmUsage) -> Any:
        """One repair request for a part with flagged items; None when it fails."""
        problems = [f"{where}: {flag.check}: {flag.message}" for where, flag in flags]
        messages = [*request.messages, {"role": "assistant", "content": draft.model_dump_json()},
                    {"role": "user", "content": self.prompt.call("repair_items", problems=problems)}]
        result = await self.llm.structured(messages, request.model, name=request.part)
        usage.add(result.usage)
        return result.value if result.ok else None

    # ------------------------------------------------------------ the record
    def _record(self, row: dict[str, Any], song: SongInputs, parts: dict[str, Any], usage: LlmUsage,
                gated: list[GateEvent]) -> SynthesizeRecord:
        caption = parts["caption"].caption.strip()
        drafted = SongMetadata(**parts["metadata"].model_dump())
        qa = [item for skill in SKILLS for item in self._qa_items(row, skill, parts.get(f"qa/{skill}"))]
        flags = check_song(caption, drafted, qa, measured(row), self.tolerance)
        metadata, grounded = self._ground(drafted, row)
        notes = list(song.notes)
        if grounded:
            notes.append(f"metadata {', '.join(grounded)} set from the measured facts")
        return SynthesizeRecord(
            song_id=row["song_id"], source=row["source"],
            caption=caption, caption_words=len(caption.split()), metadata=metadata, qa=qa,
            flags=flags, inputs=song.present, usage=usage, gated=gated,
            provenance=self.provenance(notes=notes),
        )

    def _qa_items(self, row: dict[str, Any], skill: str, draft: Any) -> list[QaItem]:
        if draft is None:
            return []
        items = [QaItem(skill=skill, question=q.question.strip(), answer=q.answer.strip())
                 for q in getattr(draft, "open", None) or []]
        for q in getattr(draft, "multiple_choice", None) or []:
            options = [o.strip() for o in q.options]
            answer = options["ABCDEF".index(q.correct)]
            # Small and large models alike favour "A": shuffle so the right option's place is
            # uniform, deterministically per song and question (reruns give the same order).
            seed = hashlib.sha256(f"{row['song_id']}\n{q.question}".encode()).hexdigest()
            random.Random(seed).shuffle(options)
            items.append(QaItem(skill=skill, question=q.question.strip(), answer=answer, options=options))
        return items

    def _ground(self, metadata: SongMetadata, row: dict[str, Any]) -> tuple[SongMetadata, list[str]]:
        """bpm/key/meter are the measured values, or null where nothing measured them (never the model's
        guess: they become reward truth); a weak key is null too (no forced major/minor). An
        instrumental's voice reads "instrumental (no vocals)". The flags keep what the model said."""
        update: dict[str, Any] = {}
        mir = row.get("mir") or {}
        if self.cfg.ground_metadata:
            update["bpm"] = round(float(mir["bpm"]), 1) if mir.get("bpm") else None
            strong = mir.get("key") and mir.get("mode") and not key_is_weak(mir, self.tolerance.key_hedge_below)
            update["key"] = f"{mir['key']} {mir['mode']}" if strong else None
            update["meter"] = meter_text(int(mir["meter"])) if mir.get("meter") else None
            if mir.get("sections"):
                update["structure"] = structure_items(mir["sections"])
        if is_instrumental(row.get("lyrics")):
            update.update(vocal_character=INSTRUMENTAL, lyric_themes=[])
        changed = [k for k, v in update.items() if getattr(metadata, k) != v]
        return metadata.model_copy(update=update), changed

