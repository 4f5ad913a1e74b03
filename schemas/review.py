"""Human review: one curator's decision on one generated item (`mfpipe review`).

Decisions are written under `OUT/reviews/decisions/`, one Parquet shard per
decision, never rewritten: a later decision on the same item supersedes an
earlier one, and both stay. `text_sha256` is the hash of the text the person
judged; when the pipeline regenerates that text the decision no longer matches
it and is stale (shown, never applied).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from .common import Record

ACTIONS = ("keep", "drop", "edit")
ITEM_KINDS = ("caption", "qa", "chain")


class ReviewEdit(Record):
    """The replacement a person wrote. Caption and chain: `text`; QA item: `question`, `answer` (and the
    options of a multiple-choice item)."""

    text: str | None = None  # the rich caption, or the chain's <think>…</think><answer>…</answer> text
    question: str | None = None
    answer: str | None = None
    options: list[str] = Field(default_factory=list)


class ReviewDecision(Record):
    id: str  # unique per decision (hex)
    reviewer: str
    created_at: dt.datetime
    item: str  # the export row id: <song_id>:caption, <song_id>:qa:<i>, <song_id>:think:<ref>
    song_id: str
    kind: Literal["caption", "qa", "chain"]
    skill: str  # caption, or the QA item's / chain's skill
    text_sha256: str  # of the text judged (mfpipe.review.items.text_sha256)
    action: Literal["keep", "drop", "edit"]
    reason: str | None = None  # a tag (mfpipe.review.decisions.REASONS)
    edit: ReviewEdit | None = None  # action == "edit": the new text
