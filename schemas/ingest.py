"""Ingest output: what the pipeline knows about each song before any model runs.

Besides the rows (`OUT/ingest/`), ingest keeps two tables of its own:
`OUT/ingest/_matches/` (`FingerprintMatch`: songs left out of the corpus by their
audio fingerprint) and `OUT/_cache/exclude/` (`ClipFingerprint`: the fingerprints
of the evaluation clips of `ingest.exclude`, by the clip's sha256).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import Field

from .common import Record, SongRecord

# Chromaprint's raw sub-fingerprints: 32-bit values, one per ~0.124 s (stored as Arrow list<uint32>).
Subprints = Annotated[list[int], pa.list_(pa.uint32())]


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
    # Chromaprint over the analysed span (processed_s); empty when ingest.fingerprint is off or the
    # audio is too short for one (under ~2.5 s).
    fingerprint: Subprints = Field(default_factory=list)


class FingerprintMatch(Record):
    """A song left out of the corpus by its fingerprint: a copy of a kept song, or one that contains an
    evaluation clip. Decided at ingest (the song is also an ingest reject of the same name) or later,
    for a song already in the corpus (`had_rows`: it keeps its rows; export leaves it out)."""

    song_id: str
    source: str
    outcome: Literal["near_duplicate", "eval_contamination"]
    matched_id: str  # near_duplicate: the kept song's song_id; eval_contamination: the clip's sha256
    matched_source: str  # the kept song's file, or the clip's
    excluded_set: str | None = None  # eval_contamination: the ingest.exclude entry the clip came from
    ber: float  # bit-error rate of the alignment
    offset_s: float  # near_duplicate: kept song's time minus this song's; eval_contamination: clip start in the song
    overlap_s: float
    criterion: str | None = None  # near_duplicate: what the kept copy won on (lossless, bitrate, duration, ...)
    had_rows: bool
    run_id: str
    created_at: dt.datetime


class ClipFingerprint(Record):
    """An evaluation clip's fingerprints, cached by its bytes' sha256 (and the number of grid phases)."""

    sha256: str
    source: str  # where it was first read
    phases: list[Subprints]
    duration_s: float | None = None
    error: str | None = None  # why it could not be fingerprinted (not audio, too short)
    created_at: dt.datetime
