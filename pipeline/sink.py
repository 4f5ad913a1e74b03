"""Where a stage's results go: its record and reject shard writers, one record per song, the corpus gate,
the summary's counts; each committed shard is published to the board, so downstream stages see its songs.

A song's record is written once: a second record for the same song_id (identical audio under two names)
becomes a `duplicate` reject naming the kept file. A stage's corpus gate (ingest: near-duplicates and
evaluation clips, `Stage.corpus_gate`) sees every result before it is written.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from ..schemas import Reject, SongRecord, arrow_schema, to_table
from ..store import OutputStore
from . import ledger
from .board import Board
from .stage import Stage


class Sink:
    def __init__(self, store: OutputStore, stage_cls: type[Stage], run_id: str, board: Board, summary: Any, *,
                 shard_max_rows: int, shard_max_mb: float, flush_seconds: float, first_at_once: bool,
                 started: float, gate: Any = None):
        self.stage_cls, self.run_id, self.board, self.summary, self.gate = stage_cls, run_id, board, summary, gate
        self.started = started
        name = stage_cls.name
        common = dict(max_rows=shard_max_rows, max_mb=shard_max_mb, flush_seconds=flush_seconds)
        # Streaming: the first records go downstream at once (the first song through the whole pipeline
        # is what a curator waits for); after that, shards fill up to flush_seconds.
        self.records = store.writer(store.stage_dir(name), arrow_schema(stage_cls.record), run_id,
                                    on_commit=lambda path, t: self._committed("record", path, t),
                                    first_at_once=first_at_once, **common)
        self.rejects = store.writer(store.rejects_dir(name), arrow_schema(Reject), run_id,
                                    on_commit=lambda path, t: self._committed("reject", path, t), **common)
        lane = board.lane(name)
        self.written: dict[str, str] = dict(lane.source_of) or {sid: "" for sid in lane.records}

    def write(self, records: list[SongRecord], rejects: list[Reject]) -> None:
        if self.gate is not None:
            records, rejects = self.gate.admit(records, rejects)
        kept = []
        for rec in records:
            first = self.written.get(rec.song_id)
            if first is not None:
                rejects.append(ledger.duplicate(self.stage_cls.name, self.run_id, rec, first or "an earlier row"))
                continue
            self.written[rec.song_id] = rec.source
            kept.append(rec)
            for name, value in self.stage_cls.counts(rec).items():
                self.summary.counts[name] = self.summary.counts.get(name, 0) + value
        self.records.write(to_table(kept, self.stage_cls.record))
        self.rejects.write(to_table(rejects, Reject))
        self.summary.rows_out += len(kept)
        self.summary.rejected += len(rejects)

    def flush_due(self) -> None:
        self.records.maybe_flush()
        self.rejects.maybe_flush()

    def close(self) -> None:
        self.records.close()
        self.rejects.close()

    def _committed(self, kind: str, path: str, table: pa.Table) -> None:
        if self.summary.first_commit_s is None and kind == "record":
            self.summary.first_commit_s = round(time.monotonic() - self.started, 3)
        self.board.publish(self.stage_cls.name, kind, path, table, self.stage_cls.key)
