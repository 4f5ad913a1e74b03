"""Synthesize: an LLM turns surface captions + MIR facts + lyrics into MF-Skills items.

Per song it writes a rich caption (six dimensions, ~`target_words` words),
structured metadata and question-answer pairs for all five skills, checks them
against the MIR facts (`mfpipe.consistency`) and stores the flags.

One song is several small requests, all sent at once: the caption, the
metadata, and one QA request per skill (seven in all). Why not one big
request: small models follow a small schema far better than one with a long
caption, eleven fields and ten questions; a failure costs one part's repair,
not the song's whole output; and seven short requests keep a server busier
than one long one. The parts share the system message and the song block as a
prefix, so vLLM's prefix cache reads the song once. The parts do not see each
other's output (the QA is grounded in the facts, not in a caption that may be
wrong).

The server: `open_services` (driver side, once per run) connects to
`llm.base_url` or starts vLLM (mfpipe.backends.vllm_server); the workers only
get its URL. Each worker keeps one event loop and one `Llm` client; the
requests of a whole batch are in flight together, up to `llm.concurrency`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ..backends.llm import OUTAGE_ERRORS, LlmConfig
from ..consistency import ConsistencyConfig, check_song
from ..pipeline.registry import register
from ..pipeline.services import Services
from ..pipeline.stage import Deferred, Resources, Stage, StageConfig, StageSettings
from ..schemas import LlmUsage, ModelRef, Reject
from ..schemas.synthesize import (
    SKILLS,
    MetadataDraft,
    QaItem,
    SongMetadata,
    SynthesizeRecord,
    caption_draft,
    qa_draft,
)
from ..songfacts import SongInputs, measured, meter_text, song_inputs, structure_items


class SynthesizeConfig(StageConfig):
    """Rich captions, structured metadata and five-skill QA from the surface captions + MIR facts."""

    resources: Resources = Field(default_factory=Resources, description="What each worker asks Ray for (a worker "
                                 "keeps llm.concurrency requests in flight).")
    prompt: str = Field("synthesize", description="Prompt id (latest version) or id.vN in prompts/.")
    target_words: int = Field(450, ge=20, description="Rich caption length the prompt asks for (paper: ~452).")
    caption_chars_per_word: float = Field(9.0, ge=4, description="Hard cap on the caption (JSON-schema "
                                          "maxLength), in characters per target word.")
    caption_min_ratio: float = Field(0.6, ge=0, le=1, description="A rich caption has at least this share of "
                                     "target_words (the schema's minLength; a shorter one gets one repair request, "
                                     "then the song is rejected as caption_too_short).")
    qa_open_per_skill: int = Field(2, ge=0, le=10, description="Open-ended questions per skill.")
    qa_choice_per_skill: int = Field(2, ge=0, le=10, description="Multiple-choice questions per skill.")
    choice_options: int = Field(4, ge=2, le=6, description="Options per multiple-choice question.")
    ground_metadata: bool = Field(True, description="Replace the metadata's bpm/key/meter/structure with the MIR "
                                  "facts when MIR has them (the model's own values are still checked and flagged).")
    max_lyrics_chars: int = Field(4000, ge=0, description="Lyrics characters in the prompt (the rest is cut, "
                                  "with a note).")
    max_caption_windows: int = Field(40, ge=0, description="Surface-caption windows in the prompt.")
    max_chord_changes: int = Field(64, ge=0, description="Chord changes in the prompt.")


@dataclass
class LlmRequest:
    """One request of one song: which part it makes, the messages, the schema model."""

    part: str  # caption | metadata | qa/<skill>
    messages: list[dict[str, str]]
    model: type


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
    summary = "LLM (vLLM): rich caption, metadata and five-skill QA from captions + MIR + lyrics"

    # ------------------------------------------------------------ driver side
    @classmethod
    def open_services(cls, settings: StageSettings, services: Services) -> StageSettings:
        return settings.replace_shared("llm", services.llm(cls.name, settings.shared["llm"]))

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
        from ..backends.llm import LlmSession
        from ..prompts import load_prompt

        self.prompt = load_prompt(self.cfg.prompt)
        self.templates = self.prompt.macros()
        self.tolerance = self.shared.consistency
        self.session = LlmSession(self.shared.llm)
        self.llm = self.session.llm

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
                           max_chord_changes=self.cfg.max_chord_changes)

    def requests(self, row: dict[str, Any], song: SongInputs | None = None) -> list[LlmRequest]:
        """The requests that make one song's record (the benchmark replays exactly these)."""
        cfg, t = self.cfg, self.templates
        song = song or self.inputs(row)
        prefix = t.song(song.facts, song.untrusted_json())

        def messages(task: str) -> list[dict[str, str]]:
            return [{"role": "system", "content": str(t.system()).strip()},
                    {"role": "user", "content": f"{prefix}\n\n{str(task).strip()}"}]

        max_chars = int(cfg.target_words * cfg.caption_chars_per_word)
        min_words = max(1, int(cfg.target_words * cfg.caption_min_ratio))
        out = [LlmRequest("caption", messages(t.task_caption(cfg.target_words)), caption_draft(max_chars, min_words)),
               LlmRequest("metadata", messages(t.task_metadata()), MetadataDraft)]
        if cfg.qa_open_per_skill or cfg.qa_choice_per_skill:
            model = qa_draft(cfg.qa_open_per_skill, cfg.qa_choice_per_skill, cfg.choice_options)
            for skill in SKILLS:
                task = t.task_qa(skill, cfg.qa_open_per_skill, cfg.qa_choice_per_skill, cfg.choice_options)
                out.append(LlmRequest(f"qa/{skill}", messages(task), model))
        return out

    async def _song(self, row: dict[str, Any]) -> SynthesizeRecord | Reject | Deferred:
        song = self.inputs(row)
        if not song.present:
            return self.reject(row, "no_upstream",
                               "no surface caption, MIR facts or lyrics for this song: nothing to ground "
                               "the text on (run the caption, mir and lyrics stages first)", retryable=True)
        requests = self.requests(row, song)
        results = await asyncio.gather(*(self.llm.structured(r.messages, r.model, name=r.part.replace("/", "_"))
                                         for r in requests))
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
            parts[req.part] = value
        if failed:
            part, res = failed[0]
            more = f" (and {len(failed) - 1} more part(s) failed)" if len(failed) > 1 else ""
            if any(r.error in OUTAGE_ERRORS for _, r in failed):
                return self.defer(row, "llm", f"{part}: {res.message}{more}"[:2000])
            if part == "caption" and res.error == "invalid_output" and "at least" in res.message:
                return self.reject(row, "caption_too_short", f"the rich caption is too short after one repair "
                                   f"request: {res.message}{more}"[:2000], retryable=True)
            return self.reject(row, f"llm_{res.error}", f"{part}: {res.message}{more}"[:2000],
                               retryable=res.retryable)
        return self._record(row, song, parts, usage)

    def _salvage(self, request: LlmRequest, result: Any, notes: list[str]) -> Any:
        """A QA answer that still failed after its repair only because some multiple-choice
        item repeats an option: keep the other items (the skill stays covered), note the loss."""
        if not (request.part.startswith("qa/") and result.error == "invalid_output" and result.raw):
            return None
        cfg = self.cfg
        lenient = qa_draft(cfg.qa_open_per_skill, cfg.qa_choice_per_skill, cfg.choice_options, strict=False)
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

    def _record(self, row: dict[str, Any], song: SongInputs, parts: dict[str, Any],
                usage: LlmUsage) -> SynthesizeRecord:
        caption = parts["caption"].caption.strip()
        drafted = SongMetadata(**parts["metadata"].model_dump())
        qa = [item for skill in SKILLS for item in self._qa_items(row, skill, parts.get(f"qa/{skill}"))]
        flags = check_song(caption, drafted, qa, measured(row), self.tolerance)
        metadata, grounded = self._ground(drafted, row.get("mir"))
        notes = list(song.notes)
        if grounded:
            notes.append(f"metadata {', '.join(grounded)} set from the MIR facts")
        return SynthesizeRecord(
            song_id=row["song_id"], source=row["source"],
            caption=caption, caption_words=len(caption.split()), metadata=metadata, qa=qa,
            flags=flags, inputs=song.present, usage=usage,
            provenance=self.provenance(
                models=[ModelRef(role="llm", name=self.llm.model)],
                prompt=self.prompt.ref(),
                settings=json.dumps(self._settings(), sort_keys=True),
                notes=notes,
            ),
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

    def _ground(self, metadata: SongMetadata, mir: dict[str, Any] | None) -> tuple[SongMetadata, list[str]]:
        """The MIR values for bpm/key/meter (the flags keep what the model said)."""
        if not (self.cfg.ground_metadata and mir):
            return metadata, []
        update: dict[str, Any] = {}
        if mir.get("bpm"):
            update["bpm"] = round(float(mir["bpm"]), 1)
        if mir.get("key") and mir.get("mode"):
            update["key"] = f"{mir['key']} {mir['mode']}"
        if mir.get("meter"):
            update["meter"] = meter_text(int(mir["meter"]))
        if mir.get("sections"):
            update["structure"] = structure_items(mir["sections"])
        changed = [k for k, v in update.items() if getattr(metadata, k) != v]
        return metadata.model_copy(update=update), changed

    def _settings(self) -> dict[str, Any]:
        cfg = self.cfg
        return {**self.llm.settings(), "target_words": cfg.target_words,
                "qa_open_per_skill": cfg.qa_open_per_skill, "qa_choice_per_skill": cfg.qa_choice_per_skill,
                "choice_options": cfg.choice_options, "ground_metadata": cfg.ground_metadata,
                "parts": ["caption", "metadata", *(f"qa/{s}" for s in SKILLS)]}
