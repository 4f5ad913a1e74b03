"""Ingest output: what the pipeline knows about each song before any model runs."""

from __future__ import annotations

from pydantic import Field

from .common import SongRecord


class IngestRecord(SongRecord):
    duration_s: float  # decoded length of the file
    processed_s: float  # what later stages use: min(duration_s, max_duration_s)
    truncated: bool  # True when duration_s exceeded the limit and was cut
    sample_rate: int
    channels: int
    n_windows: int  # 30 s windows over processed_s (the last may be partial)
    format: str  # container as the decoder named it (WAV, FLAC, MP3, ...)
    subtype: str | None = None  # sample encoding (PCM_16, PCM_24, FLOAT, ...)
    size_bytes: int
    peak_dbfs: float
    decoder: str  # soundfile or ffmpeg
    warnings: list[str] = Field(default_factory=list)
