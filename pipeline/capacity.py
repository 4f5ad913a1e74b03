"""A phase's CPUs and GPUs, and which stage holds what: the elastic pools' one ledger of resources.

The plan (`pipeline.plan`) gives each stage of a phase its planned workers, and the most it may grow to.
Pools take a worker's share when they start or grow and give it back when they shrink or finish, so a
stage grows into what finished or starved stages free; the phase never holds more than it has. GPU shares
are packed per GPU, each whole on one GPU (as Ray places fractional requests).

The rules that keep it fair and free of deadlock:
- a stage with work but fewer workers than planned is *owed*: while a stage is owed and what is free cannot
  start its worker, stages above their planned count give back a worker that holds what it is short of as
  soon as one is idle ("shrink back when the upstream catches up");
- the planned counts fit the phase together (the plan made them so), so an owed stage always gets its
  share back;
- a worker stays while its stage has work: growth is paid for with a model load, so no churn; a stage
  starved of work (waiting for its upstream) lets its idle workers go only while another stage is
  *wanting* (has work it could give a worker but no free share) and the share it gives back would let that
  stage start one (a GPU worker is not let go for a CPU stage that its tenth of a CPU cannot serve).
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
        self.owed: dict[str, tuple[float, float]] = {}  # stage -> the (cpus, gpus) one of its workers needs
        self.wanting: dict[str, tuple[float, float]] = {}  # stage -> the (cpus, gpus) one more worker needs

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
                self.owed.pop(stage, None)
            return grant

    def give(self, stage: str, grant: Grant) -> None:
        with self._lock:
            self.held[stage].remove(grant)
            self.cpus_free += grant.cpus
            if grant.gpu is not None:
                self.bins[grant.gpu] += grant.gpus

    def want(self, stage: str, short: bool, cpus: float = 0.0, gpus: float = 0.0) -> None:
        """Whether `stage` has work but fewer workers (of `cpus`, `gpus`) than planned (others then shrink
        back to theirs)."""
        with self._lock:
            if short:
                self.owed[stage] = (cpus, gpus)
            else:
                self.owed.pop(stage, None)

    def wants(self, stage: str, wanting: bool, cpus: float = 0.0, gpus: float = 0.0) -> None:
        """Whether `stage` could use another worker (of `cpus`, `gpus`) that the phase has no free share for."""
        with self._lock:
            if wanting:
                self.wanting[stage] = (cpus, gpus)
            else:
                self.wanting.pop(stage, None)

    def someone_else_wants(self, stage: str, grant: Grant | None = None) -> bool:
        """Whether a stage other than `stage` wants a worker that `grant`, given back, would let it start
        (without a grant: whether any other stage wants one at all)."""
        with self._lock:
            return any(grant is None or self._fits_with(grant, cpus, gpus)
                       for other, (cpus, gpus) in self.wanting.items() if other != stage)

    def wanting_stages(self, stage: str) -> list[str]:
        with self._lock:
            return sorted(set(self.wanting) - {stage})

    def _fits_with(self, grant: Grant | None, cpus: float, gpus: float) -> bool:
        """Whether a worker of (`cpus`, `gpus`) fits what is free, with `grant` given back too."""
        if cpus > self.cpus_free + (grant.cpus if grant else 0.0) + 1e-9:
            return False
        if gpus <= 0:
            return True
        extra = grant.gpus if grant and grant.gpu is not None else 0.0
        return any(gpus <= free + (extra if grant and i == grant.gpu else 0.0) + 1e-9
                   for i, free in enumerate(self.bins))

    def owed_by(self, stage: str, grant: Grant | None = None) -> list[str]:
        """The stages `stage` should give a worker back to: it holds more than its planned count, and they
        are owed their planned share, cannot start a worker with what is free, and are short of something
        `grant` holds (a worker is not given back for nothing: its stage would only load its models again)."""
        with self._lock:
            if len(self.held.get(stage, [])) <= self.planned.get(stage, 1):
                return []
            return sorted(other for other, (cpus, gpus) in self.owed.items()
                          if other != stage and not self._fits_with(None, cpus, gpus)
                          and self._helps(grant, cpus, gpus))

    def _helps(self, grant: Grant | None, cpus: float, gpus: float) -> bool:
        if grant is None:
            return True
        short_of_cpus = cpus > self.cpus_free + 1e-9
        return (short_of_cpus and grant.cpus > 0) or (not short_of_cpus and gpus > 0 and grant.gpus > 0)

    def holding(self, stage: str) -> int:
        return len(self.held.get(stage, []))
