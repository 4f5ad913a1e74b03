"""A phase's CPUs and GPUs, and which stage holds what: the elastic pools' one ledger of resources.

The plan (`pipeline.plan`) gives each stage of a phase its planned workers, and the most it may grow to.
Pools take a worker's share when they start or grow and give it back when they shrink or finish, so a
stage grows into what finished or starved stages free; the phase never holds more than it has. GPU shares
are packed per GPU, each whole on one GPU (as Ray places fractional requests).

The rules that keep it fair and free of deadlock:
- a stage with work but fewer workers than planned is *owed*: while any stage is owed, stages above their
  planned count give back a worker as soon as one is idle ("shrink back when the upstream catches up");
- the planned counts fit the phase together (the plan made them so), so an owed stage always gets its
  share back;
- a worker stays while its stage has work: growth is paid for with a model load, so no churn; a stage
  starved of work (waiting for its upstream) lets its idle workers go only while another stage is
  *wanting* (has work it could give a worker but no free share).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Grant:
    """One worker's share: CPUs, and a GPU share on one GPU (`gpu` is its index, None without one)."""

    cpus: float
    gpus: float
    gpu: int | None


class Capacity:
    def __init__(self, cpus: float, gpus: float):
        self._lock = threading.Lock()
        self.cpus_free = float(cpus)
        self.bins = [1.0] * int(gpus + 1e-9)  # free share per GPU
        self.held: dict[str, list[Grant]] = {}
        self.planned: dict[str, int] = {}
        self.owed: set[str] = set()
        self.wanting: set[str] = set()

    def plan(self, stage: str, workers: int) -> None:
        self.planned[stage] = workers

    def take(self, stage: str, cpus: float, gpus: float) -> Grant | None:
        """A worker's share for `stage`, or None when the phase has none free."""
        with self._lock:
            if cpus > self.cpus_free + 1e-9:
                return None
            gpu = None
            if gpus > 0:
                gpu = next((i for i, free in enumerate(self.bins) if gpus <= free + 1e-9), None)
                if gpu is None:
                    return None
                self.bins[gpu] -= gpus
            self.cpus_free -= cpus
            grant = Grant(cpus, gpus, gpu)
            self.held.setdefault(stage, []).append(grant)
            if len(self.held[stage]) >= self.planned.get(stage, 1):
                self.owed.discard(stage)
            return grant

    def give(self, stage: str, grant: Grant) -> None:
        with self._lock:
            self.held[stage].remove(grant)
            self.cpus_free += grant.cpus
            if grant.gpu is not None:
                self.bins[grant.gpu] += grant.gpus

    def want(self, stage: str, short: bool) -> None:
        """Whether `stage` has work but fewer workers than planned (others then shrink back to theirs)."""
        with self._lock:
            if short:
                self.owed.add(stage)
            else:
                self.owed.discard(stage)

    def wants(self, stage: str, wanting: bool) -> None:
        """Whether `stage` could use another worker that the phase has no free share for."""
        with self._lock:
            if wanting:
                self.wanting.add(stage)
            else:
                self.wanting.discard(stage)

    def someone_else_wants(self, stage: str) -> bool:
        with self._lock:
            return bool(self.wanting - {stage})

    def should_shrink(self, stage: str) -> bool:
        """Give a worker back: another stage is owed its planned share and this one holds more than its own."""
        with self._lock:
            return bool(self.owed - {stage}) and len(self.held.get(stage, [])) > self.planned.get(stage, 1)

    def holding(self, stage: str) -> int:
        return len(self.held.get(stage, []))
