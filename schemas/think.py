"""MF-Think: reasoning chains whose every step was fact-checked against the audio.

One row per song with its surviving chains (kept as written, or rewritten once
the flagged steps were fixed and re-checked). A chain with more than the
configured share of wrong steps is dropped: it is not here, and a rejects row
gives its error rate.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Literal

from pydantic import Field, create_model

from .common import LlmUsage, Record, SongRecord


class ChainStep(Record):
    text: str
    verdict: str  # "correct" | "wrong" | "unverifiable"
    # "audio_lm" | "mir" | "rules" (mfpipe.lint's checks) | "logic" (a deduction: never heard)
    checked_by: str
    kind: str | None = None  # "observation" | "deduction" (think.v2 on; None: untagged, think.v1)
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
    usage: LlmUsage = Field(default_factory=LlmUsage)  # the LLM requests of this song (drafts and rewrites)


# ------------------------------------------------------------------ what the LLM returns
# (JSON schemas sent as `response_format`; every string and list is bounded, see synthesize.)

StepText = Annotated[str, Field(min_length=1, max_length=200)]
FixText = Annotated[str, Field(max_length=200)]  # empty: delete the step


class TaggedStep(Record):
    """A step as think.v2 asks for it: one claim, and whether it is heard or deduced."""

    kind: Literal["observation", "deduction"]
    text: StepText


class TaggedFix(Record):
    kind: Literal["observation", "deduction"]
    text: FixText


@cache
def chain_draft(min_steps: int, max_steps: int, n_options: int = 0, tagged: bool = False) -> type[Record]:
    """{"steps": [min..max short sentences, or {kind, text} with `tagged`], "answer": ...}: for a
    multiple-choice question the answer is the letter of an option that exists, else a short sentence."""
    step = TaggedStep if tagged else StepText
    return create_model(
        f"ChainDraft{min_steps}to{max_steps}x{n_options}{'t' if tagged else ''}", __base__=Record,
        steps=(list[step], Field(min_length=min_steps, max_length=max_steps)),
        answer=_answer_field(n_options),
    )


@cache
def fix_draft(n_fixes: int, n_options: int = 0, tagged: bool = False) -> type[Record]:
    """{"fixes": [one replacement per flagged step, in order; "" deletes it], "answer": ...}."""
    fix = TaggedFix if tagged else FixText
    return create_model(
        f"ChainFix{n_fixes}x{n_options}{'t' if tagged else ''}", __base__=Record,
        fixes=(list[fix], Field(min_length=n_fixes, max_length=n_fixes)),
        answer=_answer_field(n_options),
    )


def _answer_field(n_options: int) -> tuple:
    if n_options:
        letters = "ABCDEFGH"[:n_options]
        return (str, Field(pattern=f"^[{letters}]$", min_length=1, max_length=1))
    return (str, Field(min_length=1, max_length=120))  # short: the reference, word for word
