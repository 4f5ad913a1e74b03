"""The run's board: what every stage of the output folder has committed, and the rows a batch reads.

`Board` holds, for every stage, the keys of its committed rows (and the shard each is in), the songs it
rejected for good, and whether it has finished in this run. It is loaded once at the start of a run
(what earlier runs left) and then fed by the stages' sinks as each shard commits, so downstream stages
see a song as soon as it is committed. `RowReader` turns a batch of keys into the rows a stage reads:
its base table's columns plus each upstream's row nested under the stage's name (shards cached, only
the declared columns read).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..store import OutputStore
from .stage import INPUTS, Stage


@dataclass
class Lane:
    """One stage's committed facts."""

    records: dict[str, str] = field(default_factory=dict)  # song_id -> shard path
    sources: set[str] = field(default_factory=set)  # ingest: the sources it wrote
    source_of: dict[str, str] = field(default_factory=dict)  # ingest: song_id -> the source it was kept from
    rejected: set[str] = field(default_factory=set)  # song_ids (or sources) it rejected
    finished: bool = False
    failed: bool = False
    events: list[tuple[str, list[str]]] = field(default_factory=list)  # ("record"|"reject"|"finished", keys)


class Board:
    def __init__(self, withdrawn: set[str] | None = None) -> None:
        self.lanes: dict[str, Lane] = {}
        self.changed = threading.Condition()
        # Songs with rows that a corpus gate left out (e.g. a near-duplicate replaced by a better copy):
        # no stage takes them any more.
        self.withdrawn: set[str] = set() if withdrawn is None else withdrawn

    def lane(self, stage: str) -> Lane:
        return self.lanes.setdefault(stage, Lane())

    def load(self, store: OutputStore, stage: str, key: str) -> None:
        """What an earlier run left committed: records (by shard) and rejects for good."""
        lane = self.lane(stage)
        for path in store.shards(store.stage_dir(stage)):
            cols = ["song_id", "source"] if key == "source" else ["song_id"]
            table = store.read_shard(path, columns=cols)
            for sid in table["song_id"].to_pylist():
                lane.records.setdefault(sid, path)
            if key == "source":
                self._sources(lane, table)
        lane.rejected |= store.keys(store.rejects_dir(stage), key, where=("retryable", False))

    def publish(self, stage: str, kind: str, path: str, table: pa.Table, key: str) -> None:
        with self.changed:
            lane = self.lane(stage)
            if kind == "record":
                ids = table["song_id"].to_pylist()
                for sid in ids:
                    lane.records.setdefault(sid, path)
                if key == "source":
                    self._sources(lane, table)
            else:
                ids = [v for v in table[key].to_pylist() if v is not None]
                lane.rejected.update(ids)
            lane.events.append((kind, ids))
            self.changed.notify_all()

    @staticmethod
    def _sources(lane: Lane, table: pa.Table) -> None:
        for sid, source in zip(table["song_id"].to_pylist(), table["source"].to_pylist()):
            lane.sources.add(source)
            lane.source_of.setdefault(sid, source)

    def finish(self, stage: str, failed: bool = False) -> None:
        with self.changed:
            lane = self.lane(stage)
            lane.finished, lane.failed = True, failed
            lane.events.append(("finished", []))
            self.changed.notify_all()

    def wait(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)


# ------------------------------------------------------------------ reading rows


class RowReader:
    """Rows for a batch: base columns plus each upstream's row nested under its stage name."""

    def __init__(self, store: OutputStore, board: Board, cache_shards: int = 32):
        self.store = store
        self.board = board
        self._cache: OrderedDict[tuple[str, tuple[str, ...] | None], tuple[pa.Table, dict[str, int]]] = OrderedDict()
        self._size = cache_shards
        self._lock = threading.Lock()

    def _shard(self, path: str, columns: tuple[str, ...] | None) -> tuple[pa.Table, dict[str, int]]:
        key = (path, columns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if columns:  # a shard of an older version may lack a column the stage now reads: it comes out null
            have = set(self.store.read_schema(path).names)
            columns = tuple(c for c in columns if c in have)
        table = self.store.read_shard(path, columns=list(columns) if columns else None)
        if "provenance" in table.column_names:
            table = table.drop_columns(["provenance"])
        index = {sid: i for i, sid in enumerate(table["song_id"].to_pylist())}
        with self._lock:
            self._cache[key] = (table, index)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return table, index

    def _rows(self, stage: str, song_ids: list[str], columns: tuple[str, ...] | None) -> list[dict | None]:
        lane = self.board.lane(stage)
        out: list[dict | None] = [None] * len(song_ids)
        by_shard: dict[str, list[int]] = {}
        for i, sid in enumerate(song_ids):
            path = lane.records.get(sid)
            if path is not None:
                by_shard.setdefault(path, []).append(i)
        for path, positions in by_shard.items():
            table, index = self._shard(path, columns)
            take = [index[song_ids[i]] for i in positions]
            for i, row in zip(positions, table.take(pa.array(take, pa.int64())).to_pylist()):
                out[i] = row
        return out

    def batch(self, stage_cls: type[Stage], keys: list[str]) -> list[dict[str, Any]]:
        base = stage_cls.requires[0]
        if base == INPUTS:
            return [{"source": k} for k in keys]
        cols = (stage_cls.columns or {}).get(base)
        rows = [dict(r or {}) for r in self._rows(base, keys, tuple(cols) if cols else None)]
        for up in stage_cls.upstream()[1:]:
            up_cols = (stage_cls.columns or {}).get(up)
            nested = self._rows(up, keys, ("song_id", *up_cols) if up_cols else None)
            for row, found in zip(rows, nested):
                if found is not None:
                    found.pop("song_id", None)
                row[up] = found
        return rows
