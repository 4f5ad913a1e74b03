"""`mfpipe check ITEMS.jsonl --facts FACTS`: lint any captions and QA (ours or another dataset's)
against measured facts with the checks of `mfpipe.lint`.

ITEMS: one JSON object a line with `id`, `song_id` or `source`, and `caption` or
`question` / `answer` / `options`. FACTS: an mfpipe output folder (its mir, lyrics and ingest rows,
matched to an item by `song_id`, else by `source`, else by the file name of `source`), or one
song's facts as a JSON object in the MIR row's shape (plus `has_vocals`, and where known
`vocal_regions`, `words`, `duration_s`, `title`, `artist`, `album`, `year`), used for every item.

Out: one JSON line per item, `{"id", "flags": [{"check", "message"}]}`; an item line that cannot be
read gets `{"id", "line", "error", "flags": []}` instead. An item without facts is still checked
for what needs none (tools cited, leaky questions, distractors, any identity at all).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any

import fsspec

from .consistency import ConsistencyConfig
from .lint import check_item
from .songfacts import measured


class CheckInputError(ValueError):
    """The items or the facts cannot be read at all."""


@dataclass
class FactsIndex:
    """Facts by song_id, by source and by file name; or one song's facts for every item."""

    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_name: dict[str, dict[str, Any]] = field(default_factory=dict)
    single: dict[str, Any] | None = None

    def lookup(self, item: dict[str, Any]) -> dict[str, Any] | None:
        if self.single is not None:
            return self.single
        source = str(item.get("source") or "")
        return (self.by_id.get(str(item.get("song_id") or "")) or self.by_source.get(source)
                or self.by_name.get(PurePosixPath(source).name))

    def add(self, song_id: str, source: str, facts: dict[str, Any]) -> None:
        self.by_id[song_id] = facts
        if source:
            self.by_source[source] = facts
            self.by_name.setdefault(PurePosixPath(source).name, facts)


def load_facts(path: str) -> FactsIndex:
    """An output folder or one song's facts (a JSON file), see the module doc."""
    fs, root = fsspec.core.url_to_fs(path)
    if fs.isdir(root):
        return _folder_facts(path)
    if not fs.isfile(root):
        raise CheckInputError(f"facts not found: {path} (an mfpipe output folder or a JSON file)")
    try:
        with fs.open(root, "r") as fh:
            facts = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckInputError(f"facts file {path} is not JSON: {exc}") from exc
    if not isinstance(facts, dict):
        raise CheckInputError(f"facts file {path} must hold one JSON object (one song's facts)")
    return FactsIndex(single=facts)


def _folder_facts(path: str) -> FactsIndex:
    from .store import OutputStore

    store = OutputStore(path)
    rows: dict[str, dict[str, Any]] = {}
    for stage in ("ingest", "mir", "lyrics"):
        for row in store.read(store.stage_dir(stage)).to_pylist():
            song = rows.setdefault(row["song_id"], {"song_id": row["song_id"], "source": row.get("source")})
            if stage == "ingest":
                song["processed_s"] = row.get("processed_s")
            else:
                song[stage] = {k: v for k, v in row.items() if k not in ("song_id", "source", "provenance")}
    if not any("mir" in r or "lyrics" in r for r in rows.values()):
        raise CheckInputError(f"{path} has no mir or lyrics rows: run `mfpipe run --stage mir` (and lyrics) first, "
                              "or give one song's facts as a JSON file")
    index = FactsIndex()
    for song_id, row in rows.items():
        facts = measured(row)
        if facts:
            index.add(song_id, str(row.get("source") or ""), facts)
    return index


def read_items(path: str) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, item or None, why not) for each non-empty line."""
    try:
        with fsspec.open(path, "r", encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    yield number, None, f"not JSON: {exc}"
                    continue
                yield (number, item, None) if isinstance(item, dict) else (number, None, "not a JSON object")
    except FileNotFoundError as exc:
        raise CheckInputError(f"items file not found: {path}") from exc


def _problem(item: dict[str, Any]) -> str | None:
    if item.get("id") is None:
        return "no `id`"
    if not (item.get("caption") or item.get("question") or item.get("answer")):
        return "neither `caption` nor `question`/`answer`"
    if item.get("options") is not None and not isinstance(item["options"], list):
        return "`options` must be a list"
    return None


@dataclass
class CheckSummary:
    items: int = 0
    flagged: int = 0
    errors: int = 0
    without_facts: int = 0
    by_check: Counter = field(default_factory=Counter)


def check_items(items_path: str, facts: FactsIndex, out: IO[str],
                tolerance: ConsistencyConfig = ConsistencyConfig()) -> CheckSummary:
    """Write one JSON line per item to `out`; return the counts."""
    summary = CheckSummary()
    for number, item, error in read_items(items_path):
        error = error or _problem(item)
        if error:
            summary.errors += 1
            out.write(json.dumps({"id": (item or {}).get("id"), "line": number, "error": error, "flags": []}) + "\n")
            continue
        known = facts.lookup(item)
        summary.items += 1
        summary.without_facts += known is None
        flags = check_item(item, known, tolerance)
        summary.flagged += bool(flags)
        summary.by_check.update(f.check for f in flags)
        out.write(json.dumps({"id": item["id"], "flags": [f.as_json() for f in flags]}, ensure_ascii=False) + "\n")
    return summary


def gate_counts(store) -> dict[str, Counter]:
    """What synthesize's gate did, from its rows' `gated` column: check -> {repaired, dropped}."""
    counts: dict[str, Counter] = {}
    folder = store.stage_dir("synthesize")
    for path in store.shards(folder):
        if "gated" not in store.read_schema(path).names:
            continue  # rows written before the gate existed
        for events in store.read_shard(path, columns=["gated"]).column("gated").to_pylist():
            for event in events or []:
                counts.setdefault(event["check"], Counter())[event["outcome"]] += 1
    return counts
