"""The decision store: what people decided about each item, kept under `OUT/reviews/decisions/`.

Every decision is its own Parquet shard (`part-<time>-<id>.parquet`, the
`ReviewDecision` schema), written with the output store's atomic write: on a
local folder a hidden temporary renamed into place, on an object store one PUT
and its commit record. Nothing is ever rewritten or deleted, so two reviewers,
or two servers on the same folder, never lose each other's work: a decision is
committed the moment it is made, or not at all.

Which decision counts (`resolve`): for each item, the latest decision whose
`text_sha256` is the hash of the item's current text, whoever made it. A
decision on a text that has since been regenerated is stale: shown, never
applied. Each reviewer's own latest decision is kept apart too (agreement
between reviewers).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow.dataset as pads

from ..schemas import arrow_schema, to_table, utc_now
from ..schemas.review import ACTIONS, ReviewDecision, ReviewEdit
from ..store import OutputStore
from ..thinktext import ThinkFormatError, parse, render
from .items import Item

REVIEWS = "reviews"
DECISIONS = "decisions"
# The reason tags a decision can carry (the page offers these; empty = no reason given).
REASONS = ("wrong fact", "not in the audio", "contradicts the MIR facts", "wrong answer", "bad question",
           "unclear wording", "duplicate", "fixed a fact", "fixed the wording", "other")
MAX_TEXT = 20_000  # characters of an edited text
MAX_OPTIONS = 12


class ReviewError(ValueError):
    """A decision that cannot be recorded; the message says why, for the person who made it."""


def _clean(text: Any, what: str) -> str:
    value = str(text or "").strip()
    if not value:
        raise ReviewError(f"the {what} is empty")
    if len(value) > MAX_TEXT:
        raise ReviewError(f"the {what} is longer than {MAX_TEXT} characters")
    return value


def checked_edit(item: Item, edit: Mapping[str, Any] | None) -> ReviewEdit:
    """The edit of one item, validated for its kind (chains are re-rendered in the training layout)."""
    edit = edit or {}
    if item.kind == "caption":
        return ReviewEdit(text=_clean(edit.get("text"), "caption"))
    if item.kind == "chain":
        try:
            parsed = parse(_clean(edit.get("text"), "chain text"))
        except ThinkFormatError as exc:
            raise ReviewError(f"not a <think>…</think><answer>…</answer> text: {exc}") from None
        return ReviewEdit(text=render(parsed.steps, parsed.answer))
    question, answer = _clean(edit.get("question"), "question"), _clean(edit.get("answer"), "answer")
    options = [str(o).strip() for o in edit.get("options") or [] if str(o).strip()]
    if item.options:
        if not 2 <= len(options) <= MAX_OPTIONS or len({o.casefold() for o in options}) != len(options):
            raise ReviewError(f"a multiple-choice item needs 2 to {MAX_OPTIONS} different options")
        if answer not in options:
            raise ReviewError("the answer of a multiple-choice item must be one of its options")
    elif options:
        raise ReviewError("an open question has no options")
    return ReviewEdit(question=question, answer=answer, options=options)


def new_decision(reviewer: str, item: Item, action: str, reason: str | None = None,
                 edit: Mapping[str, Any] | None = None, text_sha256: str | None = None) -> ReviewDecision:
    """A decision on `item` as it is now (`text_sha256`: the hash the person saw; it must be the current one)."""
    reviewer = (reviewer or "").strip()
    if not reviewer or len(reviewer) > 80:
        raise ReviewError("a reviewer name of 1 to 80 characters is needed")
    if action not in ACTIONS:
        raise ReviewError(f"the action must be one of {', '.join(ACTIONS)}")
    if reason and reason not in REASONS:
        raise ReviewError(f"unknown reason {reason!r}")
    if text_sha256 is not None and text_sha256 != item.sha256:
        raise ReviewError("the text has changed since the page was loaded: reload the song")
    return ReviewDecision(id=uuid.uuid4().hex, reviewer=reviewer, created_at=utc_now(), item=item.key,
                          song_id=item.song_id, kind=item.kind, skill=item.skill, text_sha256=item.sha256,
                          action=action, reason=reason or None,
                          edit=checked_edit(item, edit) if action == "edit" else None)


class DecisionStore:
    """Append-only decisions of one output folder (local or fsspec)."""

    def __init__(self, store: OutputStore):
        self.store = store
        self.directory = store.join(REVIEWS, DECISIONS)
        self._seen: set[str] = set()  # shards already read (a shard never changes)
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, decision: ReviewDecision) -> str:
        """Commit one decision (atomically: it is there whole, or not at all). Returns its shard."""
        self.store.fs.makedirs(self.directory, exist_ok=True)
        name = f"part-{decision.created_at:%Y%m%dT%H%M%S%f}-{decision.id}.parquet"
        with self._lock:
            path = self.store.write_table_atomic(self.directory, name, to_table([decision], ReviewDecision))
            self._seen.add(path)
            self._rows.append(decision.model_dump(mode="python"))
        return path

    def load(self) -> list[dict[str, Any]]:
        """Every decision, oldest first (the shards written since the last call are read, together)."""
        with self._lock:
            new = [p for p in self.store.shards(self.directory) if p not in self._seen]
            if new:
                dataset = pads.dataset(new, format="parquet", filesystem=self.store.fs,
                                       schema=arrow_schema(ReviewDecision))
                self._rows += dataset.to_table().to_pylist()
                self._seen.update(new)
            return sorted(self._rows, key=lambda d: (d["created_at"], d["id"]))


@dataclass
class ItemReview:
    """What people said about one item, against its current text."""

    current: dict[str, Any] | None = None  # the decision that counts (latest fresh one, any reviewer)
    by_reviewer: dict[str, dict[str, Any]] = field(default_factory=dict)  # each reviewer's latest fresh one
    stale: list[dict[str, Any]] = field(default_factory=list)  # decisions on an older text, newest first

    @property
    def state(self) -> str:
        """unreviewed | keep | drop | edit | stale (only decisions on an older text)."""
        if self.current is not None:
            return self.current["action"]
        return "stale" if self.stale else "unreviewed"


def resolve(decisions: Iterable[dict[str, Any]], shas: Mapping[str, str]) -> dict[str, ItemReview]:
    """Item key → its review, for the items in `shas` (key → hash of the current text). `decisions` oldest
    first; decisions on items that no longer exist are left out."""
    out: dict[str, ItemReview] = {}
    for d in decisions:
        sha = shas.get(d["item"])
        if sha is None:
            continue
        review = out.setdefault(d["item"], ItemReview())
        if d["text_sha256"] != sha:
            review.stale.insert(0, d)
            continue
        review.current = d
        review.by_reviewer[d["reviewer"]] = d
    return out
