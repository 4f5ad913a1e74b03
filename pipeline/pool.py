"""A stage's workers: Ray actors that load the stage's models once and take batches until the stage ends.

Each worker holds one batch at a time, so the driver always knows which songs a worker has: when a
worker process dies (a segfault in a native library, the kernel's OOM killer) the batch it held is
known and comes back `crashed` (the stage's flow retries its songs alone). A worker whose stage cannot
even start (`setup` raises: a model that cannot load; Ray's `actor_init_failed`) fails the stage with
the cause. A worker lost with its node (drained or preempted: Ray's `preempted`) is no song's fault: its
batch comes back `preempted` and its replacement is not counted against the pool. The same loop serves
the streaming and the barrier schedules (the NeMo Curator actor-pool executor, smaller).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..devices import worker_env
from ..schemas import Reject, RunInfo
from .stage import Deferred, Stage, StageSettings

# A replacement worker is started for a dead one at most this many times per worker slot.
MAX_REPLACEMENTS = 8


class WorkerStartError(RuntimeError):
    """The stage's workers cannot start (their `setup` fails); the message carries the cause."""


class StageActor:
    """The Ray actor: one stage instance, `setup` once, then batches."""

    def __init__(self, stage_cls: type[Stage], settings_json: str, run: RunInfo, env: dict[str, str]):
        # What the driver hands its workers by environment: a rehearsal flag (mfpipe.devices), the LLM
        # server's key (never in the settings, which provenance may quote).
        os.environ.update(env)
        started = time.monotonic()
        self.stage = stage_cls(stage_cls.settings_from_json(settings_json), run)
        self.stage.setup()
        self.load_s = time.monotonic() - started  # the model load this worker cost

    def ready(self) -> float:
        """The seconds `setup` took (the worker's model load)."""
        return self.load_s

    def process(self, rows: list[dict[str, Any]]) -> tuple[list[tuple[str, str, str]], float, float]:
        """(key, kind, payload JSON) per result, and the wall and CPU seconds the batch took here."""
        started, cpu = time.monotonic(), time.process_time()
        key = self.stage.key
        out = []
        for result in self.stage.process_safely(rows):
            if isinstance(result, Deferred):
                out.append((result.key, "deferred", json.dumps(dataclasses.asdict(result))))
            else:
                kind = "reject" if isinstance(result, Reject) else "record"
                out.append((str(getattr(result, key, None) or ""), kind, result.model_dump_json()))
        return out, time.monotonic() - started, time.process_time() - cpu

    def teardown(self) -> None:
        self.stage.teardown()


@dataclass
class Slot:
    """One worker place of the pool: its actor and the batch it holds."""

    actor: Any = None
    ready_ref: Any = None
    ready: bool = False
    batch: list[dict[str, Any]] | None = None
    alone: bool = False  # the batch is one song retried alone after a crash
    ref: Any = None
    replacements: int = 0
    grant: Any = None  # its share of the phase (pipeline.capacity)
    load_s: float | None = None  # its model load, not yet billed to a batch
    idle_since: float | None = None  # monotonic clock: when it last finished a batch

@dataclass
class Finished:
    """What came back for one batch."""

    rows: list[dict[str, Any]]
    results: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0  # wall, on the worker
    cpu_s: float = 0.0  # CPU time of the worker's process (all its threads)
    load_s: float = 0.0  # the worker's model load, billed to its first batch
    crashed: bool = False  # the worker died while holding it
    preempted: bool = False  # ...because its node was drained or preempted: not the songs' doing
    alone: bool = False


class WorkerPool:
    """The stage's workers; they come and go with their shares of the phase (`add`, `retire`)."""

    def __init__(self, stage_cls: type[Stage], settings: StageSettings, run: RunInfo, cpus: float, gpus: float,
                 env: dict[str, str] | None = None):
        import ray

        self.stage_cls = stage_cls
        self._remote = ray.remote(StageActor).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0,
                                                      max_task_retries=0, name=None)
        self._args = (stage_cls, settings.to_json(), run, {**worker_env(), **(env or {})})
        self.slots: list[Slot] = []
        self.loads = 0  # model loads started (workers started, replacements included)
        self.load_seconds = 0.0

    def add(self, grant: Any = None) -> Slot:
        """One more worker, holding `grant` (its share of the phase)."""
        slot = Slot(grant=grant)
        self.slots.append(slot)
        self._start(slot)
        return slot

    def retire(self, slot: Slot) -> Any:
        """Stop an idle worker; its grant comes back."""
        import ray

        self.slots.remove(slot)
        with contextlib.suppress(Exception):  # already gone
            ray.kill(slot.actor, no_restart=True)
        return slot.grant

    def _start(self, slot: Slot) -> None:
        self.loads += 1
        slot.actor = self._remote.remote(*self._args)
        slot.ready_ref = slot.actor.ready.remote()
        slot.ready = False

    # ------------------------------------------------------------ dispatch
    def idle(self) -> list[Slot]:
        return [s for s in self.slots if s.ready and s.batch is None]

    def busy(self) -> int:
        return sum(s.batch is not None for s in self.slots)

    def submit(self, slot: Slot, rows: list[dict[str, Any]], alone: bool = False) -> None:
        slot.batch, slot.alone = rows, alone
        slot.ref = slot.actor.process.remote(rows)

    def poll(self, timeout: float) -> list[Finished]:
        """Wait up to `timeout` for workers to start or batches to finish; what finished."""
        import ray

        waiting = {s.ready_ref: s for s in self.slots if not s.ready and s.ready_ref is not None}
        running = {s.ref: s for s in self.slots if s.batch is not None}
        refs = [*waiting, *running]
        if not refs:
            time.sleep(timeout)
            return []
        # The first to finish wakes us at once (its worker is free again), then whatever else is done.
        done, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if done and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            done += more
        out = []
        for ref in done:
            if ref in waiting:
                self._started(waiting[ref])
                continue
            slot = running[ref]
            rows, alone = slot.batch, slot.alone
            slot.batch, slot.ref, slot.idle_since = None, None, time.monotonic()
            try:
                results, seconds, cpu_s = ray.get(ref)
                load_s, slot.load_s = slot.load_s or 0.0, None
                out.append(Finished(rows, results, seconds, cpu_s, load_s, alone=alone))
            except ray.exceptions.RayActorError as exc:
                out.append(Finished(rows, crashed=True, preempted=exc.preempted, alone=alone))
                self._replace(slot, counted=not exc.preempted)
        return out

    def _started(self, slot: Slot) -> None:
        import ray

        try:
            slot.load_s = float(ray.get(slot.ready_ref))
            self.load_seconds += slot.load_s
            slot.ready, slot.idle_since = True, time.monotonic()
        except ray.exceptions.RayActorError as exc:
            if exc.actor_init_failed:  # the stage's `setup` raised: every worker would
                raise WorkerStartError(f"the {self.stage_cls.name} workers cannot start: "
                                       f"{_creation_error(exc)}") from None
            self._replace(slot, counted=not exc.preempted)  # died while loading (killed): a fresh one
        finally:
            slot.ready_ref = slot.ready_ref if not slot.ready else None

    def _replace(self, slot: Slot, counted: bool = True) -> None:
        """A fresh worker in a dead one's place; a worker lost with its node (preempted) is not counted."""
        import ray

        if counted and slot.replacements >= MAX_REPLACEMENTS:
            raise WorkerStartError(f"the {self.stage_cls.name} workers keep dying ({slot.replacements} "
                                   "replacements for one worker); see the Ray worker logs")
        slot.replacements += int(counted)
        ray.kill(slot.actor, no_restart=True)
        self._start(slot)

    def abandon(self) -> list[list[dict[str, Any]]]:
        """Batches still held (their songs stay pending for a later run)."""
        held = [s.batch for s in self.slots if s.batch is not None]
        for s in self.slots:
            s.batch, s.ref = None, None
        return held

    def close(self) -> list[Any]:
        """Stop every worker; their grants come back."""
        import ray

        grants = [slot.grant for slot in self.slots if slot.grant is not None]
        for slot in self.slots:
            if slot.actor is not None:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(slot.actor, no_restart=True)
                slot.actor = None
        self.slots = []
        return grants


def _creation_error(exc: BaseException) -> str:
    """The error a worker's constructor (the stage's `setup`) raised, from Ray's message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    tail = [line for line in lines if "Error" in line or "error" in line]
    return (tail[-1] if tail else lines[-1] if lines else type(exc).__name__)[:2000]
