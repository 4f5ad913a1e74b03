"""Quality filter: the audio-LM's and the MIR rules' judgement of every generated item.

Dropped items stay in the output with `keep=false` and the reasons, never
silently removed; export leaves them out and counts them.
"""

from __future__ import annotations

from pydantic import Field

from .common import Record, SongRecord


class ItemJudgement(Record):
    keep: bool
    score: float | None = None  # the audio-LM's 1-10 judgement (expected value over the digits)
    p_yes: float | None = None  # the audio-LM's probability that the text is true of the audio
    flags: list[str] = Field(default_factory=list)  # MIR consistency flags that apply to this item
    reasons: list[str] = Field(default_factory=list)  # for curators: why kept or dropped
    windows: list[int] = Field(default_factory=list)  # the 30 s windows (0 = first) the audio-LM heard


class QaJudgement(ItemJudgement):
    index: int  # position in the synthesize row's `qa` list
    skill: str
    audio_lm_answer: str | None = None  # what the audio-LM itself answered, when asked
    audio_lm_correct: bool | None = None  # whether that matches the reference answer
    audio_lm_p: float | None = None  # the probability the audio-LM gave its own answer


class FilterRecord(SongRecord):
    caption: ItemJudgement
    qa: list[QaJudgement] = Field(default_factory=list)
    kept_items: int = 0  # caption + QA items with keep=true
    dropped_items: int = 0
    judged_items: int = 0  # items the audio-LM really judged (the rest: not judged, see their reasons)
