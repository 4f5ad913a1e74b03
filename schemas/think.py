"""MF-Think: reasoning chains whose every step was fact-checked against the audio.

One row per song with its surviving chains (kept as written, or rewritten once
the flagged steps were fixed and re-checked). A chain with more than the
configured share of wrong steps is dropped: it is not here, and a rejects row
gives its error rate.
"""

from __future__ import annotations

from pydantic import Field

from .common import Record, SongRecord


class ChainStep(Record):
    text: str
    verdict: str  # "correct" | "wrong" | "unverifiable"
    checked_by: str  # "audio_lm" | "mir"
    p_yes: float | None = None  # the audio-LM's probability that the step is true of the audio
    reason: str | None = None


class Chain(Record):
    qa_index: int | None = None  # the synthesize QA item this chain answers
    skill: str
    question: str
    options: list[str] = Field(default_factory=list)
    selected_because: str  # why this item was picked as challenging
    steps: list[ChainStep] = Field(default_factory=list)
    answer: str
    reference_answer: str | None = None
    step_error_rate: float  # wrong steps / steps, of the version kept
    first_error_rate: float  # of the first draft (before any rewrite)
    action: str  # "kept" | "rewritten"
    rewrites: int = 0
    text: str  # the training text: <think>…</think><answer>…</answer>


class ThinkRecord(SongRecord):
    chains: list[Chain] = Field(default_factory=list)
    considered: int = 0  # items selected as challenging
    dropped: int = 0  # chains dropped for too many wrong steps (each has a rejects row)
