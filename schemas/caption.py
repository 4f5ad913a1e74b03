"""Surface captions: one short Music Flamingo description per 30 s window."""

from __future__ import annotations

from pydantic import Field

from .common import Record, SongRecord


class CaptionWindow(Record):
    start: float  # seconds
    end: float
    text: str


class CaptionRecord(SongRecord):
    windows: list[CaptionWindow] = Field(default_factory=list)  # in order, one per window
