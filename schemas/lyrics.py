"""Lyrics: where a voice is heard, the song's language, and the words sung, with their timestamps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import Record, SongRecord


class Word(Record):
    word: str
    start: float  # seconds from the start of the song
    end: float


class Region(Record):
    start: float  # seconds from the start of the song
    end: float


class RemovedWords(Record):
    """Words the hallucination guard removed (or flagged), and why."""

    rule: str  # outside_regions | filler | loop | word_rate | long_word
    text: str
    start: float
    end: float


class LyricsRecord(SongRecord):
    text: str = ""
    words: list[Word] = Field(default_factory=list)
    has_vocals: bool = False  # a voice-activity model heard a voice (on the vocal stem when separation is on)
    vocal_regions: list[Region] = Field(default_factory=list)
    language: str | None = None  # ISO 639-1 where detected; "und": not English, otherwise unknown
    language_confidence: float | None = None
    # ok | no_vocals (nothing transcribed: an instrumental) | language_unsupported (no model covers the
    # language: no words rather than words of another language) | fallback (the fallback model wrote them)
    outcome: Literal["ok", "no_vocals", "language_unsupported", "fallback"] = "ok"
    words_model: str | None = None  # the model that wrote this song's words
    removed: list[RemovedWords] = Field(default_factory=list)
    separated: bool = False  # the voice was heard on a separated vocal stem
