"""Surface captions: a short Music Flamingo description of every 30 s window of every song.

The paper's first annotation, kept short to keep hallucination low. Each song
is decoded once (16 kHz mono, up to ingest's `processed_s`, so at most 40
windows = 1200 s), cut into ingest's windows, and the windows of ALL songs in
the batch go to the model together (`AudioLM.generate`: sorted by length,
`caption.generate_batch` clips per generate call, left padding). A song whose
audio cannot be decoded, or one of whose windows the model could not caption,
becomes a reject; the other songs of the batch are not affected.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mfpipe import audio
from mfpipe.pipeline.registry import register
from mfpipe.pipeline.stage import Resources
from mfpipe.schemas import CaptionRecord, CaptionWindow, Reject
from mfpipe.stages._audiolm import AudioLMStage, AudioLMStageConfig


class CaptionConfig(AudioLMStageConfig):
    """Surface captions: one short Music Flamingo description per 30 s window."""

    resources: Resources = Field(default_factory=Resources, description="What each worker asks Ray for.")
    prompt: str = Field("caption_window", description="Prompt id in prompts/ (`id`: latest version, `id.vN`: "
                                                      "pinned).")
    max_new_tokens: int = Field(96, ge=1, description="Most tokens per window caption.")
    min_new_tokens: int = Field(0, ge=0, description="Fewest tokens per window caption.")
    min_clip_s: float = Field(1.0, ge=0.1, le=30.0, description="A last window shorter than this is captioned "
                                                                "from the song's last min_clip_s seconds.")


@register
class CaptionStage(AudioLMStage):
    name = "caption"
    record = CaptionRecord
    requires = ("ingest",)
    columns = {"ingest": ("song_id", "source", "processed_s")}
    config_model = CaptionConfig
    summary = "Music Flamingo: a short caption of every 30 s window (batched across songs)"
    lm_role = "surface_captioner"
    stand_in = ("uses", "the captions are noise")

    def setup_stage(self) -> None:
        self.generation = {"max_new_tokens": self.cfg.max_new_tokens, "min_new_tokens": self.cfg.min_new_tokens}
        self.provenance_settings = self.settings_text(self.lm.settings(**self.generation, window_s=self.window_s,
                                                                       min_clip_s=self.cfg.min_clip_s))

    def process_batch(self, rows: list[dict[str, Any]]) -> list[CaptionRecord | Reject]:
        from mfpipe.backends.audiolm import MAX_WINDOWS, SAMPLE_RATE, Query, split_windows, window_clip

        results: dict[int, CaptionRecord | Reject] = {}
        plans: dict[int, tuple[list[tuple[float, float]], list[int], list[str]]] = {}
        queries: list[Query] = []
        text = self.prompt.text.strip()
        for n, row in enumerate(rows):
            try:
                samples = audio.load_mono(row["source"], SAMPLE_RATE, max_seconds=row["processed_s"])
            except audio.AudioError as exc:
                results[n] = self.reject(row, exc.kind, exc.message)
                continue
            spans = split_windows(row["processed_s"], self.window_s, MAX_WINDOWS)
            notes = []
            first = len(queries)
            for i, (start, end) in enumerate(spans):
                clip = window_clip(samples, start, end, self.cfg.min_clip_s)
                if end - start < self.cfg.min_clip_s:
                    notes.append(f"window {i} ({start:g}-{end:g} s) is shorter than {self.cfg.min_clip_s:g} s: "
                                 f"captioned from the song's last {len(clip) / SAMPLE_RATE:.2f} s")
                queries.append(Query(clip, text))
            plans[n] = (spans, list(range(first, len(queries))), notes)
        answers = self.lm.generate(queries, **self.generation) if queries else []
        for n, (spans, positions, notes) in plans.items():
            results[n] = self._song(rows[n], spans, [answers[p] for p in positions], notes)
        return [results[n] for n in range(len(rows))]

    def _song(self, row: dict[str, Any], spans, answers, notes: list[str]) -> CaptionRecord | Reject:
        failed = [(i, a.error) for i, a in enumerate(answers) if a.error is not None]
        if failed:
            i, error = failed[0]
            return self.reject(row, "caption_failed",
                               f"{len(failed)} of {len(spans)} windows could not be captioned; "
                               f"window {i} ({spans[i][0]:g}-{spans[i][1]:g} s): {error}", retryable=True)
        windows = [CaptionWindow(start=s, end=e, text=a.text or "") for (s, e), a in zip(spans, answers)]
        return CaptionRecord(
            song_id=row["song_id"],
            source=row["source"],
            provenance=self.provenance(notes=self.lm.notes() + notes),
            windows=windows,
        )
