"""The items a person reviews, their keys and the hash of the text judged.

An item's key is the id its export row has (`<song_id>:caption`,
`<song_id>:qa:<i>`, `<song_id>:think:<qa_index or c<n>>`): it names the place,
and is the same run after run. `text_sha256` names the text: the same text
hashes the same on every rerun, a regenerated one differently, so a decision
made on an older text is recognised as stale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def caption_key(song_id: str) -> str:
    return f"{song_id}:caption"


def qa_key(song_id: str, index: int) -> str:
    return f"{song_id}:qa:{index}"


def chain_key(song_id: str, chain: dict[str, Any], position: int) -> str:
    ref = chain["qa_index"] if chain.get("qa_index") is not None else f"c{position}"
    return f"{song_id}:think:{ref}"


def text_sha256(kind: str, answer: str, question: str = "", options: Sequence[str] = ()) -> str:
    """The hash of what a person judges: the caption's text; a QA item's question, options and answer;
    a chain's question and training text (the caption's instruction is not part of it)."""
    parts = [kind, answer] if kind == "caption" else [kind, question, list(options or []), answer]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Item:
    key: str
    song_id: str
    kind: str  # caption | qa | chain
    skill: str
    question: str
    answer: str  # the caption text, the QA answer, the chain's training text
    options: tuple[str, ...] = ()
    index: int | None = None  # QA: position in the synthesize row; chain: the QA item it answers

    @property
    def sha256(self) -> str:
        return text_sha256(self.kind, self.answer, self.question, self.options)


def synthesize_items(row: dict[str, Any]) -> list[Item]:
    """The caption and QA items of one synthesize row."""
    sid = row["song_id"]
    items = [Item(caption_key(sid), sid, "caption", "caption", "", row.get("caption") or "")]
    for i, qa in enumerate(row.get("qa") or []):
        items.append(Item(qa_key(sid, i), sid, "qa", qa["skill"], qa["question"], qa["answer"],
                          tuple(qa.get("options") or ()), i))
    return items


def chain_items(row: dict[str, Any]) -> list[Item]:
    """The chains of one think row (the ones think kept or rewrote: dropped chains are not in the row)."""
    sid = row["song_id"]
    return [Item(chain_key(sid, c, n), sid, "chain", c["skill"], c["question"], c["text"],
                 tuple(c.get("options") or ()), c.get("qa_index"))
            for n, c in enumerate(row.get("chains") or [])]


def export_row_sha256(row: dict[str, Any]) -> str:
    """The judged-text hash of an exported row (mf_skills or mf_think), before any edit."""
    if "text" in row:  # mf_think
        return text_sha256("chain", row["text"], row["question"], row.get("options") or ())
    return text_sha256(row["kind"], row["answer"], row["question"], row.get("options") or ())
