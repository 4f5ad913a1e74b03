"""One map stage's loop over its songs, from the parts that do the work.

A stage's work is the songs its upstream stages commit (`Readiness`), minus what the `Ledger` says is
done; it hands them in batches to its worker pool (`WorkerPool`) as they become ready, streams the
results into its `Sink`, and ends when its upstream stages have finished and nothing is left. Under the
barrier schedule a stage simply waits until its upstream stages have finished. Songs that come back
`deferred` (a shared service failed) go back to the queue while the `OutageGuard` pauses the stage and
probes the service. A song whose worker died is retried alone; one that kills a worker again while alone
is rejected (`worker_crash`); a worker lost with its node (preempted) costs its songs nothing.

The pool is elastic (`pipeline.capacity`): it starts with the stage's planned workers (fewer when there
is less work), grows one worker at a time into what finished or starved stages free while songs wait
beyond its idle workers (up to the plan's `max_workers`), gives an idle worker back when a stage short
of its planned share is owed one, and lets idle workers go while it starves (down to one). Every
song's cost (wall, CPU, GPU share x wall, tokens, its share of model loads) goes to `OUT/_costs/`.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..schemas import Reject, RunInfo, SongCost, SongRecord, arrow_schema, to_table
from ..store import COSTS, OutputStore, OutputStoreError
from . import ledger as rejects
from .board import Board, RowReader
from .capacity import Capacity
from .config import RunConfig
from .ledger import Ledger
from .outage import OutageGuard
from .plan import StagePlan
from .pool import Finished, WorkerPool, WorkerStartError
from .readiness import Readiness
from .services import ServiceError
from .sink import Sink
from .stage import Stage, StageSettings
from .stopping import StopControl

ProgressFn = Callable[[str, str, Any], None]
POLL_S = 0.25
MAX_POOL_CHANGES = 64  # the summary keeps a stage's first pool changes (a long run's churn shows early)


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
    cpu_seconds: float = 0.0  # CPU time of the workers' processes on batches
    gpu_seconds: float = 0.0  # GPU share x busy time
    tokens_in: int = 0  # LLM prompt tokens
    tokens_out: int = 0  # LLM completion tokens
    model_loads: int = 0  # workers started (each loads the stage's models)
    model_load_seconds: float = 0.0
    max_workers: int = 0  # the most workers it held at once (elastic pools)
    pool_changes: list[str] = field(default_factory=list)  # each start, growth and give-back, when and why
    counts: dict[str, int] = field(default_factory=dict)  # summed `Stage.counts` of the records written
    first_commit_s: float | None = None  # from the run's start to this stage's first committed shard
    finished_s: float | None = None  # from the run's start to this stage's end
    notes: list[str] = field(default_factory=list)


@dataclass
class FlowContext:
    """What every stage of a run shares."""

    store: OutputStore
    board: Board
    reader: RowReader
    ledger: Ledger
    run: RunInfo
    config: RunConfig  # the run section itself: schedule, shard sizes, outage limits, warm-up
    stop: StopControl
    services: Any  # pipeline.services.Services
    progress: ProgressFn
    started: float  # monotonic clock at the run's start
    planned: set[str]
    gates: dict[str, Any] = field(default_factory=dict)  # stage → its corpus gate (`Stage.corpus_gate`)
    capacity: Capacity | None = None  # the current phase's resources (set by the runner per phase)


class StageFlow:
    def __init__(self, ctx: FlowContext, stage_cls: type[Stage], settings: StageSettings, plan: StagePlan,
                 sources: list[str] | None = None):
        self.ctx, self.cls, self.settings, self.plan = ctx, stage_cls, settings, plan
        self.name, self.key = stage_cls.name, stage_cls.key
        self.sources = sources  # ingest: the run's inputs
        self.summary = StageSummary(stage_cls.name, workers=plan.workers)
        self.ready = Readiness(stage_cls, ctx.board, ctx.planned, ctx.ledger.done(stage_cls))
        self.outage = OutageGuard(lambda: ctx.services.check(self.name), lambda: ctx.services.recover(self.name),
                                  max_wait_s=ctx.config.outage_max_wait_s,
                                  song_strikes=ctx.config.outage_song_strikes)
        self.alone: deque[str] = deque()  # songs to retry one at a time after a worker died
        self.deaths: dict[str, int] = {}  # song -> workers it was on when they died
        self.pool: WorkerPool | None = None
        self.sink: Sink | None = None
        self.handed_out = 0
        self.idle_s = ctx.config.pool_idle_s
        self.gave_up_waiting = False  # its last worker went while it starved: none until songs are queued
        # Each song's cost rows (pipeline: OUT/_costs/<stage>/), written as the stage's results are.
        self.costs = ctx.store.writer(ctx.store.join(COSTS, self.name), arrow_schema(SongCost), ctx.run.run_id,
                                      max_rows=ctx.config.shard_max_rows, max_mb=ctx.config.shard_max_mb,
                                      flush_seconds=ctx.config.flush_seconds)

    # ------------------------------------------------------------ the loop
    def run(self) -> StageSummary:
        started = time.monotonic()
        failed: str | None = None
        try:
            self.sink = Sink(self.ctx.store, self.cls, self.ctx.run.run_id, self.ctx.board, self.summary,
                             shard_max_rows=self.ctx.config.shard_max_rows, shard_max_mb=self.ctx.config.shard_max_mb,
                             flush_seconds=self.ctx.config.flush_seconds,
                             first_at_once=self.ctx.config.schedule == "stream", started=self.ctx.started,
                             gate=self.ctx.gates.get(self.name))
            # In the stage's own thread: a server that takes minutes to start holds up only its stages.
            self.settings = self.ctx.services.open(self.cls, self.settings)
            self.ready.seed(self.sources)
            self.ctx.progress(self.name, "start", None)
            failed = self._loop()
        except (ServiceError, WorkerStartError) as exc:
            failed = str(exc)
        except OutputStoreError as exc:  # the folder, not the stage: the whole run stops
            failed = str(exc)
            self.ctx.stop.fail(exc)
        except Exception as exc:  # noqa: BLE001 - the stage fails with its cause; the run goes on
            failed = f"{type(exc).__name__}: {exc}"
        finally:
            if self.pool is not None:
                self.summary.pending += sum(len(batch) for batch in self.pool.abandon())
                for grant in self.pool.close():
                    self.ctx.capacity.give(self.name, grant)
                self.summary.model_loads = self.pool.loads
                self.summary.model_load_seconds = round(self.pool.load_seconds, 3)
            try:
                if self.sink is not None:
                    self.sink.close()
                self.costs.close()
            except OutputStoreError as exc:
                failed = failed or str(exc)
                self.ctx.stop.fail(exc)
        self._finish(failed, time.monotonic() - started)
        return self.summary

    def _loop(self) -> str | None:
        stop, barrier = self.ctx.stop, self.ctx.config.schedule == "barrier"
        while True:
            self.ready.absorb()
            if stop.requested.is_set():
                if self.pool is None or self.pool.busy() == 0 or stop.past_deadline():
                    return None
            elif not (barrier and not self.ready.upstream_finished()):
                failed = self._check_outage()
                if failed:
                    return failed
                self._dispatch()
            if self.pool is not None and self.pool.busy():
                for finished in self.pool.poll(POLL_S):
                    self._take(finished)
            else:
                if self.pool is not None:
                    self.pool.poll(0)  # let workers finish starting
                if self.ready.upstream_finished() and not self._work_left() and not self.outage.paused:
                    self.ready.absorb()
                    if not self._work_left():
                        return None
                self.ctx.board.wait(POLL_S)
            self.sink.flush_due()
            self._report()

    def _dispatch(self) -> None:
        if self.outage.paused:
            return
        self._size_pool()
        if self.pool is None:
            return
        size = self.cls.resources(self.settings).batch_size
        for slot in self.pool.idle():
            if self.alone:
                self.pool.submit(slot, self.ctx.reader.batch(self.cls, [self.alone.popleft()]), alone=True)
                continue
            # Streaming: the first batches carry one song each, so the first songs reach the next stage
            # (and the end of the pipeline) soon; full batches after that, for throughput.
            if self.ctx.config.schedule == "stream" and self.handed_out < self.ctx.config.stream_warmup:
                size = 1
            keys = []
            while len(keys) < size and self.ctx.ledger.allows(self.handed_out):
                key = self.ready.take()
                if key is None:
                    break
                keys.append(key)
                self.handed_out += 1
            if not keys:
                break
            self.summary.rows_in += sum(1 for k in keys if k not in self.outage.strikes)
            self.pool.submit(slot, self.ctx.reader.batch(self.cls, keys))

    def _size_pool(self) -> None:
        """Start, grow or shrink the pool (see the module docstring)."""
        capacity, size = self.ctx.capacity, self.cls.resources(self.settings).batch_size
        queued = len(self.ready.pending) + len(self.alone)
        # Workers start (and load their models) once songs are in sight, also songs still waiting for an
        # upstream stage, so their start-up overlaps the upstream work; a stage with nothing to do starts none.
        if not (queued or self.ready.waiting or (self.pool and self.pool.busy())):
            capacity.want(self.name, short=False)
            capacity.wants(self.name, False)
            return
        if self.pool is None:
            self.pool = WorkerPool(self.cls, self.settings, self.ctx.run, self.plan.cpus, self.plan.gpus,
                                   env=self.ctx.services.worker_env())
        held, busy = len(self.pool.slots), self.pool.busy()
        if queued:
            self.gave_up_waiting = False
        # Workers the known work could keep busy (one to wait with, unless it was let go while starving).
        needed = busy + -(-queued // size) or (0 if self.gave_up_waiting else 1)
        if self.ready.upstream_finished():
            needed = min(needed, busy + max(1, -(-queued // size)))  # all the work is known
        capacity.want(self.name, held < min(self.plan.workers, needed), self.plan.cpus, self.plan.gpus)
        grow = held < needed and held < max(self.plan.workers, self.plan.max_workers) \
            and (held < self.plan.workers or queued > size * len(self.pool.idle()))
        grant = capacity.take(self.name, self.plan.cpus, self.plan.gpus) if grow else None
        if grant is not None:
            self.pool.add(grant)
            self._pool_change(f"+1 ({queued} queued, {busy} busy)")
        capacity.wants(self.name, grow and grant is None, self.plan.cpus, self.plan.gpus)
        self._shrink(queued)
        self.summary.workers = max(self.summary.workers, len(self.pool.slots))

    def _shrink(self, queued: int) -> None:
        """Give back an idle worker: to a stage owed its planned share, or, while this stage starves for work
        and another stage wants a worker, one that has idled `run.pool_idle_s`."""
        now, capacity = time.monotonic(), self.ctx.capacity
        starving = not queued and not self.ready.upstream_finished()
        for slot in self.pool.idle():
            idle_long = starving and slot.idle_since is not None and now - slot.idle_since > self.idle_s \
                and capacity.someone_else_wants(self.name, slot.grant)
            owed = capacity.owed_by(self.name, slot.grant)
            if owed or idle_long:
                why = f"owed to {', '.join(owed)}" if owed else \
                    f"starved; wanted by {', '.join(capacity.wanting_stages(self.name))}"
                capacity.give(self.name, self.pool.retire(slot))
                self._pool_change(f"-1 ({why})")
                self.gave_up_waiting = self.gave_up_waiting or (idle_long and not self.pool.slots)
                return

    def _pool_change(self, what: str) -> None:
        if len(self.summary.pool_changes) < MAX_POOL_CHANGES:
            self.summary.pool_changes.append(f"{time.monotonic() - self.ctx.started:.1f}s {what}")

    def _work_left(self) -> bool:
        return bool(self.alone) or (bool(self.ready.pending) and self.ctx.ledger.allows(self.handed_out))

    # ------------------------------------------------------------ results
    def _take(self, finished: Finished) -> None:
        self.summary.busy_seconds += finished.seconds
        if finished.crashed:
            self._crashed(finished)
            return
        self._cost(finished)
        records: list[SongRecord] = []
        failed: list[Reject] = []
        for key, kind, payload in finished.results:
            if kind == "deferred":
                self.summary.deferred += 1
                self.outage.deferred(key, json.loads(payload)["message"])
                self.ready.put_back(key)
            elif kind == "reject":
                failed.append(Reject.model_validate_json(payload))
            else:
                records.append(self.cls.record.model_validate_json(payload))
        self.sink.write(records, failed)

    def _crashed(self, finished: Finished) -> None:
        """A worker died holding this batch: its songs go again, alone; a song that kills a worker a second
        time on its own is rejected. Lost with its node (preempted): the batch simply goes again."""
        keys = [str(r.get(self.key)) for r in finished.rows]
        if finished.preempted:
            for key in reversed(keys):
                self.ready.put_back(key)
            return
        for key, row in zip(keys, finished.rows):
            self.deaths[key] = self.deaths.get(key, 0) + 1
            if finished.alone and self.deaths[key] >= 2:
                self.sink.write([], [rejects.worker_crash(self.name, self.ctx.run.run_id, row)])
            else:
                self.alone.append(key)

    def _check_outage(self) -> str | None:
        check = self.outage.check(waiting=len(self.ready.pending) + len(self.alone))
        if check.struck_out:
            gone = {k for k, _ in check.struck_out}
            self.ready.drop(gone)
            message = dict(check.struck_out)
            rows = self.ctx.reader.batch(self.cls, sorted(gone))
            self.sink.write([], [rejects.service_error(self.name, self.ctx.run.run_id, r,
                                                       self.ctx.config.outage_song_strikes,
                                                       message[str(r.get(self.key))]) for r in rows])
        return check.failed

    def _cost(self, finished: Finished) -> None:
        """Each song's share of what its batch cost, and the tokens its record says it spent."""
        n = max(1, len(finished.rows))
        usage = {}
        for key, kind, payload in finished.results:
            if kind == "record":
                found = json.loads(payload).get("usage") or {}
                usage[key] = (found.get("prompt_tokens", 0), found.get("completion_tokens", 0))
        gpus = self.plan.gpus
        rows = []
        for row in finished.rows:
            tokens_in, tokens_out = usage.get(str(row.get(self.key)), (0, 0))
            rows.append(SongCost(song_id=row.get("song_id"), source=str(row.get("source") or ""), stage=self.name,
                                 run_id=self.ctx.run.run_id, wall_s=finished.seconds / n, cpu_s=finished.cpu_s / n,
                                 gpu_s=gpus * finished.seconds / n, gpus=gpus, tokens_in=tokens_in,
                                 tokens_out=tokens_out, model_load_s=finished.load_s / n))
        s = self.summary
        s.cpu_seconds += finished.cpu_s
        s.gpu_seconds += gpus * finished.seconds
        s.tokens_in += sum(r.tokens_in for r in rows)
        s.tokens_out += sum(r.tokens_out for r in rows)
        self.costs.write(to_table(rows, SongCost))

    # ------------------------------------------------------------ the end
    def _finish(self, failed: str | None, seconds: float) -> None:
        s = self.summary
        limited = not self.ctx.ledger.allows(self.handed_out)
        s.pending += (0 if limited else len(self.ready.pending)) + len(self.alone)
        s.skipped, s.error = self.ready.skipped, failed
        if failed is None and not self.ctx.stop.requested.is_set():
            self.ctx.store.resolve_rejects(self.name, self.key, self.ctx.run.run_id)
        if self.ready.left_out:
            s.notes.append(f"{self.ready.left_out} song(s) left out of the corpus by ingest (near-duplicates, "
                           "evaluation contamination) were not taken")
        if failed is None and self.ready.waiting:
            s.notes.append(f"{len(self.ready.waiting)} song(s) had no row of a required upstream stage "
                           "(rejected there)")
        s.notes += [f"upstream stage {up} failed: its songs were not all available"
                    for up in self.ready.upstream_failed()]
        s.seconds = round(seconds, 3)
        s.finished_s = round(time.monotonic() - self.ctx.started, 3)
        self.ctx.board.finish(self.name, failed=failed is not None)
        self.ctx.progress(self.name, "failed" if failed else "done", s)

    def _report(self) -> None:
        state = "paused" if self.outage.paused else "stopping" if self.ctx.stop.requested.is_set() else "running"
        self.ctx.progress(self.name, "update", {
            "done": self.summary.rows_out + self.summary.rejected,
            "queued": len(self.ready.pending) + len(self.alone), "waiting": len(self.ready.waiting),
            "busy": self.pool.busy() if self.pool else 0, "state": state})
