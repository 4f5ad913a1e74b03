"""Lyrics: ASR transcript with word timestamps."""

from __future__ import annotations

from pydantic import Field

from .common import Record, SongRecord


class Word(Record):
    word: str
    start: float  # seconds from the start of the song
    end: float


class LyricsRecord(SongRecord):
    text: str = ""
    words: list[Word] = Field(default_factory=list)
    has_vocals: bool = False  # False: no speech/singing was recognised
    language: str | None = None
