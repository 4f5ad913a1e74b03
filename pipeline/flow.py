"""Songs flowing between stages: what each stage has committed, and one stage's loop over its songs.

`Board` holds, for every stage of the output folder, the keys of its committed rows (and the shard
each is in), the songs it rejected, and whether it has finished in this run. Writers publish each
shard to it as soon as the shard is committed, so downstream stages see the songs then.

`StageFlow` runs one map stage: its work is the songs whose required upstream rows are committed
(optional upstreams: committed, rejected, finished or not planned), minus what it already wrote or
rejected for good; it hands them in batches to its worker pool as they become ready, streams the
results to its shard writers, and ends when its upstream stages have finished and nothing is left.
Under the barrier schedule a stage simply waits until its upstream stages have finished. Songs that
come back `deferred` (a shared service failed) are put back while the stage pauses and checks the
service; a song whose worker died is retried alone, and rejected when it kills a worker by itself.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..schemas import Reject, RunInfo, SongRecord, arrow_schema, to_table, utc_now
from ..store import OutputStore
from .pool import WorkerPool, WorkerStartError
from .services import ServiceError
from .stage import INPUTS, Stage, StageSettings
from .stopping import StopControl

ProgressFn = Callable[[str, str, Any], None]
POLL_S = 0.25


@dataclass
class StageSummary:
    stage: str
    rows_in: int = 0  # units handed to the stage this run
    rows_out: int = 0  # records written
    rejected: int = 0  # rejects written
    skipped: int = 0  # already done by an earlier run (resume)
    seconds: float = 0.0
    workers: int = 0
    error: str | None = None
    pending: int = 0  # units left for a later run (a stop, an outage, a failed upstream)
    deferred: int = 0  # times a song was put back because a shared service failed
    busy_seconds: float = 0.0  # time the workers spent on batches (summed over workers)
    counts: dict[str, int] = field(default_factory=dict)  # summed `Stage.counts` of the records written
    first_commit_s: float | None = None  # from the run's start to this stage's first committed shard
    finished_s: float | None = None  # from the run's start to this stage's end
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ the board


@dataclass
class Lane:
    """One stage's committed facts."""

    records: dict[str, str] = field(default_factory=dict)  # song_id -> shard path
    sources: set[str] = field(default_factory=set)  # ingest: the sources it wrote
    rejected: set[str] = field(default_factory=set)  # song_ids (or sources) it rejected
    finished: bool = False
    failed: bool = False
    events: list[tuple[str, list[str]]] = field(default_factory=list)  # ("record"|"reject"|"finished", keys)


class Board:
    def __init__(self) -> None:
        self.lanes: dict[str, Lane] = {}
        self.changed = threading.Condition()

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
                lane.sources.update(table["source"].to_pylist())
        lane.rejected |= store.keys(store.rejects_dir(stage), key, where=("retryable", False))

    def publish(self, stage: str, kind: str, path: str, table: pa.Table, key: str) -> None:
        with self.changed:
            lane = self.lane(stage)
            if kind == "record":
                ids = table["song_id"].to_pylist()
                for sid in ids:
                    lane.records.setdefault(sid, path)
                if key == "source":
                    lane.sources.update(table["source"].to_pylist())
            else:
                ids = [v for v in table[key].to_pylist() if v is not None]
                lane.rejected.update(ids)
            lane.events.append((kind, ids))
            self.changed.notify_all()

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


# ------------------------------------------------------------------ one stage


@dataclass
class FlowContext:
    """What every stage of a run shares."""

    store: OutputStore
    board: Board
    reader: RowReader
    run: RunInfo
    stop: StopControl
    services: Any
    progress: ProgressFn
    started: float  # monotonic clock at the run's start
    planned: set[str]
    schedule: str
    limit: int | None
    shard_max_rows: int
    shard_max_mb: float
    flush_seconds: float
    outage_max_wait_s: float
    outage_song_strikes: int
    stream_warmup: int = 0


class StageFlow:
    def __init__(self, ctx: FlowContext, stage_cls: type[Stage], settings: StageSettings, workers: int,
                 cpus: float, gpus: float, sources: list[str] | None = None):
        self.ctx = ctx
        self.cls = stage_cls
        self.settings = settings
        self.workers, self.cpus, self.gpus = workers, cpus, gpus
        self.key = stage_cls.key
        self.summary = StageSummary(stage_cls.name, workers=workers)
        self.sources = sources  # ingest: the run's inputs
        self.base = stage_cls.requires[0]
        self.required = [r for r in stage_cls.requires[1:] if r != INPUTS]
        self.optional = [u for u in stage_cls.uses if u not in stage_cls.requires]
        self.upstream_planned = [u for u in stage_cls.upstream() if u in ctx.planned and u != INPUTS]
        self.pending: deque[str] = deque()
        self.alone: deque[str] = deque()  # songs to retry one at a time after a worker died
        self.waiting: set[str] = set()
        self.seen: set[str] = set()
        self.strikes: dict[str, int] = {}
        self.cursor: dict[str, int] = {}
        self.pool: WorkerPool | None = None
        self.paused: tuple[float, float, str] | None = None  # (since, next probe, cause)
        self.deferred_now: list[tuple[str, str]] = []  # (key, message) since the last probe
        self.dispatched = 0

    # ------------------------------------------------------------ work
    def _done_before(self) -> set[str]:
        store = self.ctx.store
        done = store.keys(store.stage_dir(self.cls.name), self.key)
        return done | store.keys(store.rejects_dir(self.cls.name), self.key, where=("retryable", False))

    def _ready(self, key: str) -> bool:
        board = self.ctx.board
        if self.base != INPUTS and key not in board.lane(self.base).records:
            return False
        if any(key not in board.lane(r).records for r in self.required):
            return False
        for up in self.optional:
            lane = board.lane(up)
            if up in self.ctx.planned and not lane.finished and key not in lane.records and key not in lane.rejected:
                return False
        return True

    def _offer(self, key: str) -> None:
        if key in self.seen:
            return
        if key in self.done:
            self.seen.add(key)
            self.summary.skipped += 1
            return
        if self._ready(key):
            self.seen.add(key)
            self.waiting.discard(key)
            self.pending.append(key)
        else:
            self.waiting.add(key)

    def _absorb(self) -> None:
        """Take in what upstream stages committed since the last look."""
        board = self.ctx.board
        for up in self.cls.upstream():
            if up == INPUTS:
                continue
            lane = board.lane(up)
            start = self.cursor.get(up, 0)
            events = lane.events[start:]
            self.cursor[up] = start + len(events)
            for kind, keys in events:
                if kind == "finished":
                    for key in list(self.waiting):
                        self._offer(key)
                elif up == self.base and kind == "record":
                    for key in keys:
                        self._offer(key)
                else:
                    for key in keys:
                        if key in self.waiting:
                            self._offer(key)

    def _upstream_finished(self) -> bool:
        return all(self.ctx.board.lane(u).finished for u in self.upstream_planned)

    # ------------------------------------------------------------ the loop
    def run(self) -> StageSummary:
        started = time.monotonic()
        name = self.cls.name
        self.done = self._done_before()
        self._open_writers()
        failed: str | None = None
        try:
            # In the stage's own thread: a server that takes minutes to start holds up only the
            # stages that need it.
            self.settings = self.cls.open_services(self.settings, self.ctx.services)
            self._seed()
            self.ctx.progress(name, "start", None)
            failed = self._loop()
        except (ServiceError, WorkerStartError) as exc:
            failed = str(exc)
        except Exception as exc:  # noqa: BLE001 - the stage fails with its cause; the run goes on
            failed = f"{type(exc).__name__}: {exc}"
        finally:
            if self.pool is not None:
                for batch in self.pool.abandon():
                    self.summary.pending += len(batch)
                self.pool.close()
            self._close_writers()
        self.summary.pending += (0 if self._limited() else len(self.pending)) + len(self.alone)
        self.summary.error = failed
        if failed is None and not self.ctx.stop.requested.is_set():
            self.ctx.store.resolve_rejects(name, self.key, self.ctx.run.run_id)
        for up in self.upstream_planned:
            if self.ctx.board.lane(up).failed:
                self.summary.notes.append(f"upstream stage {up} failed: its songs were not all available")
        self.summary.seconds = round(time.monotonic() - started, 3)
        self.summary.finished_s = round(time.monotonic() - self.ctx.started, 3)
        self.ctx.board.finish(name, failed=failed is not None)
        self.ctx.progress(name, "failed" if failed else "done", self.summary)
        return self.summary

    def _seed(self) -> None:
        if self.base == INPUTS:
            for source in self.sources or []:
                self._offer(source)
            return
        board = self.ctx.board
        with board.changed:
            keys = list(board.lane(self.base).records)
        for key in keys:
            self._offer(key)
        self._absorb()

    def _loop(self) -> str | None:
        stop = self.ctx.stop
        barrier = self.ctx.schedule == "barrier"
        while True:
            self._absorb()
            if stop.requested.is_set():
                if self.pool is None or self.pool.busy() == 0 or stop.past_deadline():
                    return None
            elif not (barrier and not self._upstream_finished()):
                failed = self._check_paused()
                if failed:
                    return failed
                self._dispatch()
            if self.pool is not None and self.pool.busy():
                for finished in self.pool.poll(POLL_S):
                    self._take(finished)
            else:
                if self.pool is not None:
                    self.pool.poll(0)  # let workers finish starting
                if self._upstream_finished() and not self._work_left() and not self.paused:
                    self._absorb()
                    if not self._work_left():
                        self.summary.notes.extend(self._never_ready())
                        return None
                self.ctx.board.wait(POLL_S)
            self.records.maybe_flush()
            self.rejects.maybe_flush()
            self._report()

    def _never_ready(self) -> list[str]:
        if not self.waiting:
            return []
        return [f"{len(self.waiting)} song(s) had no row of a required upstream stage (rejected there)"]

    def _dispatch(self) -> None:
        if self.paused is not None:
            return
        if self.pool is None:
            # Workers start (and load their models) once songs are in sight, also songs still waiting
            # for an upstream stage, so their start-up overlaps the upstream work; a stage with
            # nothing to do starts none.
            if not (self.pending or self.alone or self.waiting):
                return
            workers = self.workers
            if self._upstream_finished():  # all the work is known: no more workers than batches
                size = self.cls.resources(self.settings).batch_size
                workers = max(1, min(workers, -(-(len(self.pending) + len(self.alone)) // size)))
            self.pool = WorkerPool(self.cls, self.settings, self.ctx.run, workers, self.cpus, self.gpus)
            self.summary.workers = workers
        size = self.cls.resources(self.settings).batch_size
        for slot in self.pool.idle():
            if self.alone:
                key = self.alone.popleft()
                self.pool.submit(slot, self.ctx.reader.batch(self.cls, [key]), alone=True)
                continue
            keys: list[str] = []
            # Streaming: the first batches carry one song each, so the first songs reach the next stage
            # (and the end of the pipeline) soon; full batches after that, for throughput.
            if self.ctx.schedule == "stream" and self.dispatched < self.ctx.stream_warmup:
                size = 1
            while self.pending and len(keys) < size and not self._limited():
                keys.append(self.pending.popleft())
                self.dispatched += 1
            if not keys:
                break
            self.summary.rows_in += sum(1 for k in keys if k not in self.strikes)
            self.pool.submit(slot, self.ctx.reader.batch(self.cls, keys))

    def _work_left(self) -> bool:
        return bool(self.alone) or (bool(self.pending) and not self._limited())

    def _limited(self) -> bool:
        return self.ctx.limit is not None and self.dispatched >= self.ctx.limit

    # ------------------------------------------------------------ results
    def _take(self, finished) -> None:
        self.summary.busy_seconds += finished.seconds
        if finished.crashed:
            if finished.alone or len(finished.rows) == 1:
                row = finished.rows[0]
                reject = self._stage().reject(row, "worker_crash", "the worker process died while processing this "
                                              "song alone (a crash in a native library or the memory limit); the "
                                              "rest of the run went on", retryable=True)
                self._write([], [reject])
            else:
                self.alone.extend(str(r.get(self.key)) for r in finished.rows)
            return
        records: list[SongRecord] = []
        rejects: list[Reject] = []
        answered = set()
        for key, kind, payload in finished.results:
            answered.add(key)
            if kind == "deferred":
                self._deferred(key, payload)
            elif kind == "reject":
                rejects.append(Reject.model_validate_json(payload))
            else:
                records.append(self.cls.record.model_validate_json(payload))
        self._write(records, rejects)

    def _deferred(self, key: str, payload: str) -> None:
        import json

        message = json.loads(payload)["message"]
        self.summary.deferred += 1
        self.strikes[key] = self.strikes.get(key, 0) + 1
        self.deferred_now.append((key, message))
        self.pending.appendleft(key)
        if self.paused is None:
            now = time.monotonic()
            self.paused = (now, now, message)

    def _check_paused(self) -> str | None:
        """While paused: check the service; resume when it answers, fail when it stays down too long."""
        if self.paused is None:
            return None
        since, probe_at, cause = self.paused
        now = time.monotonic()
        if now < probe_at:
            return None
        problem = self.ctx.services.check(self.cls.name)
        if problem is None:
            self._strike_out()
            self.paused = None
            return None
        self.ctx.services.recover(self.cls.name)
        down = now - since
        if down > self.ctx.outage_max_wait_s:
            waiting = len(self.pending) + len(self.alone)
            return (f"a shared service has been down for {down:.0f} s (run.outage_max_wait_s = "
                    f"{self.ctx.outage_max_wait_s:g}): {problem}; {waiting} song(s) stay pending for the next "
                    f"run (last failure: {cause[:300]})")
        wait = min(30.0, 2.0 * (1 + down / 4))
        self.paused = (since, now + wait, problem)
        return None

    def _strike_out(self) -> None:
        """The service answers: the songs that keep failing while it does are the songs' own problem."""
        limit = self.ctx.outage_song_strikes
        out = [(k, m) for k, m in self.deferred_now if self.strikes.get(k, 0) >= limit]
        self.deferred_now = []
        if not out:
            return
        gone = {k for k, _ in out}
        self.pending = deque(k for k in self.pending if k not in gone)
        rows = self.ctx.reader.batch(self.cls, sorted(gone))
        stage = self._stage()
        message = dict(out)
        self._write([], [stage.reject(r, "service_error", f"failed {limit} times while the service itself "
                                      f"answered: {message[str(r.get(self.key))]}"[:2000], retryable=True)
                         for r in rows])

    # ------------------------------------------------------------ sinks
    def _stage(self) -> Stage:
        if not hasattr(self, "_driver_stage"):
            self._driver_stage = self.cls(self.settings, self.ctx.run)  # for rejects only: setup never runs
        return self._driver_stage

    def _open_writers(self) -> None:
        ctx, name = self.ctx, self.cls.name
        store = ctx.store
        common = dict(max_rows=ctx.shard_max_rows, max_mb=ctx.shard_max_mb, flush_seconds=ctx.flush_seconds)
        # Streaming: the first records go downstream at once (the first song through the whole pipeline
        # is what a curator waits for); after that, shards fill up to flush_seconds.
        self.records = store.writer(store.stage_dir(name), arrow_schema(self.cls.record), ctx.run.run_id,
                                    on_commit=lambda path, t: self._committed("record", path, t),
                                    first_at_once=ctx.schedule == "stream", **common)
        self.rejects = store.writer(store.rejects_dir(name), arrow_schema(Reject), ctx.run.run_id,
                                    on_commit=lambda path, t: self._committed("reject", path, t), **common)
        table = store.read(store.stage_dir(name), columns=["song_id", "source"])
        # A song's record is written once: a second record for the same song_id (identical audio
        # under two names) becomes a `duplicate` reject instead.
        self.written = dict(zip(table["song_id"].to_pylist(), table["source"].to_pylist()))

    def _committed(self, kind: str, path: str, table: pa.Table) -> None:
        if self.summary.first_commit_s is None and kind == "record":
            self.summary.first_commit_s = round(time.monotonic() - self.ctx.started, 3)
        self.ctx.board.publish(self.cls.name, kind, path, table, self.key)

    def _write(self, records: list[SongRecord], rejects: list[Reject]) -> None:
        kept = []
        for rec in records:
            first = self.written.get(rec.song_id)
            if first is not None:
                rejects.append(Reject(source=rec.source, song_id=rec.song_id, stage=self.cls.name, error="duplicate",
                                      message=f"same audio as {first} (song_id {rec.song_id[:12]}…): kept once",
                                      run_id=self.ctx.run.run_id, created_at=utc_now()))
                continue
            self.written[rec.song_id] = rec.source
            kept.append(rec)
            for name, value in self.cls.counts(rec).items():
                self.summary.counts[name] = self.summary.counts.get(name, 0) + value
        self.records.write(to_table(kept, self.cls.record))
        self.rejects.write(to_table(rejects, Reject))
        self.summary.rows_out += len(kept)
        self.summary.rejected += len(rejects)

    def _close_writers(self) -> None:
        self.records.close()
        self.rejects.close()

    def _report(self) -> None:
        s = self.summary
        state = "paused" if self.paused else "stopping" if self.ctx.stop.requested.is_set() else "running"
        self.ctx.progress(self.cls.name, "update", {
            "done": s.rows_out + s.rejected, "queued": len(self.pending) + len(self.alone),
            "waiting": len(self.waiting), "busy": self.pool.busy() if self.pool else 0, "state": state})
