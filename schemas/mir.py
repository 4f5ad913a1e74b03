"""MIR back-fill output: the facts the LLM must respect and the filter checks against."""

from __future__ import annotations

from pydantic import Field

from .common import Record, SongRecord

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


class ChordSpan(Record):
    start: float
    end: float
    label: str  # Chordino's label; "N" = no chord


class SongSection(Record):
    """One section of the song's measured form."""

    start: float
    end: float
    label: str  # A, B, A, C ...: the same letter = the same music repeated
    name: str | None = None  # intro | verse | chorus | bridge | outro, where the evidence allows a guess
    confidence: float | None = None  # of the name


class MirRecord(SongRecord):
    bpm: float | None = None  # from the median inter-beat interval
    beats: list[float] = Field(default_factory=list)  # seconds
    downbeats: list[float] = Field(default_factory=list)  # seconds
    meter: int | None = None  # beats per bar from the downbeat tracker
    key: str | None = None  # one spelling per pitch class: PITCH_CLASSES
    mode: str | None = None  # "major" | "minor"
    key_strength: float | None = None
    chords: list[ChordSpan] = Field(default_factory=list)
    loudness_lufs: float | None = None  # integrated, EBU R128
    sections: list[SongSection] = Field(default_factory=list)  # the form; empty when not measured (notes say why)
