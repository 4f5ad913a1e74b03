"""MIR back-fill: tempo, beats, downbeats, meter, key, chords and loudness from classic tools.

The facts the LLM must respect and the quality filter checks captions against.
Each worker loads madmom, essentia and Chordino once (`setup`), decodes each
song once (44.1 kHz float32 mono, the first `processed_s` seconds) and hands
the same array to every tool (`mfpipe.mir.analysis`). Workers are single-
threaded; the actor pool has one per core by default (`mir.resources`).

Bad input: a song too short or too quiet for one tool gets that tool's fields
null/empty and the reason in `provenance.notes`; the other tools' facts stay.
A song that no longer decodes is a reject (its error class from the decoder).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mfpipe import audio
from mfpipe.mir.config import MirSettings
from mfpipe.pipeline.registry import register
from mfpipe.pipeline.stage import Resources, Stage, StageConfig
from mfpipe.schemas import MirRecord, Reject, ToolVersion


class MirConfig(MirSettings, StageConfig):
    """MIR back-fill: one decode per song per worker, one worker per core, single-threaded tools."""

    resources: Resources = Field(default_factory=lambda: Resources(cpus=1, batch_size=2),
                                 description="What each worker asks Ray for (one core each: the tools are "
                                             "single-threaded).")


@register
class MirStage(Stage):
    name = "mir"
    record = MirRecord
    requires = ("ingest",)
    columns = {"ingest": ("song_id", "source", "processed_s", "truncated")}
    config_model = MirConfig
    summary = "madmom beats/downbeats/meter, essentia key + loudness, Chordino chords (CPU, decode once)"

    def setup(self) -> None:
        from mfpipe.mir import MirAnalyzer

        self.analyzer = MirAnalyzer(self.cfg)
        self._tools = self.analyzer.tool_versions()
        self.provenance_settings = self.settings_text(self.analyzer.settings())

    def tool_versions(self) -> list[ToolVersion]:
        return self._tools

    def process_batch(self, rows: list[dict[str, Any]]) -> list[MirRecord | Reject]:
        return [self._analyse(row) for row in rows]

    def _analyse(self, row: dict[str, Any]) -> MirRecord | Reject:
        from mfpipe.mir import SAMPLE_RATE

        try:
            audio.file_size(row["source"])  # decoders report a missing file as undecodable: ask first
        except FileNotFoundError:
            return self.reject(row, "missing", "file not found (it was there at ingest)", retryable=True)
        try:
            mono = audio.load_mono(row["source"], SAMPLE_RATE, max_seconds=row.get("processed_s"))
        except audio.AudioError as exc:
            return self.reject(row, exc.kind, exc.message)
        if len(mono) == 0:
            return self.reject(row, "no_audio", "no audio frames decoded")
        facts = self.analyzer.analyse(mono)
        notes = list(facts.notes)
        if row.get("truncated"):
            notes.append(f"analysed the first {facts.duration_s:.1f} s (the song was truncated at ingest)")
        return MirRecord(
            song_id=row["song_id"],
            source=row["source"],
            provenance=self.provenance(notes=notes),
            **facts.record_fields(),
        )
