"""What export does with people's decisions (`mfpipe.curate.export` calls in here where it selects items).

For every item, the decision that counts is the latest one on its current text
(`decisions.resolve`):
- drop: the item is left out, whatever the filter said;
- edit: the item is exported with the person's text (QA: question, options,
  answer; chain: the training text, re-rendered, and its answer);
- keep: exported as it is;
- keep or edit of an item the filter dropped or never judged: exported
  (`quality.status = "reviewed"`): a person heard the song and judged the text
  the filter judged, and overrules it;
- a decision on an older text (stale): not applied, counted.
A reviewed row's provenance gains a `review` entry: who decided what, when,
and why (its `settings` JSON), and a note saying so.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from ..schemas import Provenance
from ..store import OutputStore
from ..thinktext import parse
from .decisions import DecisionStore, ItemReview, resolve
from .items import caption_key, export_row_sha256, qa_key, text_sha256

REVIEWED = "reviewed"  # quality.status of an item only a person's keep or edit brought into the export
COUNTS = ("reviewed", "keep", "drop", "edit", "restored", "stale")
NOTES = {"keep": "human review: kept as written", "edit": "human review: the text is the reviewer's edit",
         "restore": "human review: kept by a reviewer, overruling the quality filter"}


class ReviewLedger:
    """The decisions of one output folder as export applies them, and what it counted per table and skill."""

    def __init__(self, decisions: list[dict[str, Any]], export_provenance: dict[str, Any] | None = None):
        self.decisions = decisions
        self.export_provenance = export_provenance or {}
        self._by_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for d in decisions:
            self._by_item[d["item"]].append(d)
        self.counts: dict[str, dict[str, Counter]] = {"mf_skills": defaultdict(Counter),
                                                      "mf_think": defaultdict(Counter)}

    @classmethod
    def load(cls, store: OutputStore, export_provenance: dict[str, Any] | None = None) -> ReviewLedger:
        return cls(DecisionStore(store).load(), export_provenance)

    def review(self, key: str, sha: str) -> ItemReview:
        return resolve(self._by_item.get(key, ()), {key: sha}).get(key) or ItemReview()

    def _count(self, table: str, skill: str, review: ItemReview) -> None:
        counts = self.counts[table][skill]
        if review.current is not None:
            counts["reviewed"] += 1
            counts[review.current["action"]] += 1
        elif review.stale:
            counts["stale"] += 1

    # ------------------------------------------------------------ mf_skills
    def judge(self, song_id: str, items: list[tuple], judgements: list[dict[str, Any] | None]
              ) -> list[dict[str, Any] | None]:
        """People's word on which items go in: export's (kind, skill, question, options, answer, index) items
        and the filter's qualities (None: left out) → the qualities after people."""
        if not self.decisions:
            return judgements
        out = []
        for (kind, skill, question, options, answer, index), quality in zip(items, judgements):
            key = caption_key(song_id) if index is None else qa_key(song_id, index)
            if key not in self._by_item:  # nobody decided anything about it: no hash needed
                out.append(quality)
                continue
            review = self.review(key, text_sha256(kind, answer, question, options))
            self._count("mf_skills", skill, review)
            action = review.current["action"] if review.current else None
            if action == "drop":
                quality = None
            elif action in ("keep", "edit") and quality is None:
                self.counts["mf_skills"][skill]["restored"] += 1
                quality = {"status": REVIEWED, "score": None, "p_yes": None, "flags": [],
                           "reasons": [f"{NOTES['restore']} ({review.current['reviewer']})"]}
            out.append(quality)
        return out

    # ------------------------------------------------------------ rows (both tables)
    def apply(self, rows: list[dict[str, Any]], table: str = "mf_skills") -> list[dict[str, Any]]:
        """Exported rows after people: dropped ones out, edits in, a `review` provenance entry on each
        reviewed row. (mf_think rows are counted here; mf_skills items were counted by `judge`.)"""
        if not self.decisions:
            return rows
        out = []
        for row in rows:
            if row["id"] not in self._by_item:
                out.append(row)
                continue
            review = self.review(row["id"], export_row_sha256(row))
            if table == "mf_think":
                self._count(table, row["skill"], review)
            decision = review.current
            if decision is None:
                out.append(row)
                continue
            if decision["action"] == "drop":
                continue
            row = {**row, "provenance": [*row["provenance"], self._provenance(decision, row)]}
            if decision["action"] == "edit":
                row.update(_edited(row, decision["edit"]))
            out.append(row)
        return out

    def _provenance(self, decision: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        restored = (row.get("quality") or {}).get("status") == REVIEWED
        note = NOTES["edit"] if decision["action"] == "edit" else NOTES["restore" if restored else "keep"]
        settings = {k: decision.get(k) for k in ("id", "reviewer", "action", "reason", "text_sha256")}
        prov = Provenance(stage="review", mfpipe_version=self.export_provenance.get("mfpipe_version", ""),
                          code_rev=self.export_provenance.get("code_rev"),
                          config_hash=self.export_provenance.get("config_hash", ""),
                          run_id=self.export_provenance.get("run_id", ""), created_at=decision["created_at"],
                          settings=json.dumps(settings, sort_keys=True), notes=[note])
        return prov.model_dump(mode="python")

    # ------------------------------------------------------------ the manifest
    def manifest(self, store: OutputStore) -> dict[str, Any]:
        """`summary()` plus the filter-vs-people agreement table (over the caption and QA items reviewed)."""
        from .agreement import agreement

        return {**self.summary(), "agreement": agreement(store, self.decisions) if self.decisions else None}

    def summary(self) -> dict[str, Any]:
        """For manifest.json and the card: decisions, reviewers, and per table and skill what was done."""
        return {"decisions": len(self.decisions),
                "reviewers": sorted({d["reviewer"] for d in self.decisions}),
                "items": {table: {skill: {k: c[k] for k in COUNTS} for skill, c in sorted(skills.items())}
                          for table, skills in self.counts.items()}}


def _edited(row: dict[str, Any], edit: dict[str, Any]) -> dict[str, Any]:
    if "text" in row:  # an MF-Think chain: the training text and the answer it ends with
        return {"text": edit["text"], "answer": parse(edit["text"]).answer}
    if row["kind"] == "caption":
        return {"answer": edit["text"], "answer_words": len(edit["text"].split())}
    return {"question": edit["question"], "answer": edit["answer"], "options": list(edit.get("options") or []),
            "answer_words": len(edit["answer"].split())}
