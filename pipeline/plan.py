"""The run's resource plan: which stages run together, how many workers each gets, and what the LLM
server holds. One place does the GPU accounting, and Ray's bookkeeping follows it.

Every GPU holder asks Ray for its share: each stage worker for `resources.gpus` (a fraction where the
model is small), and a vLLM server that mfpipe starts for its share of whole GPUs (its tensor-parallel
size), from inside a Ray actor, so Ray never places a stage worker on the GPUs it holds. The stages of
a run are cut into phases that fit the cluster's GPUs:

- schedule `stream` (the default): the stages of a phase run at the same time and hand songs on as
  they finish them; when everything fits, the whole run is one phase. When it does not (one GPU,
  say), stages go into phases in pipeline order, a new phase when the next stage would not fit; the
  server is stopped when no stage of the next phase needs it and started again for a later one. A
  stage that needs the server and a GPU of its own (think: the LLM writes the chains, Music Flamingo
  checks the steps) gets the server beside it at a smaller share (`llm.server.min_gpus` at least),
  its memory fraction lowered to match.
- schedule `barrier`: a stage starts when its upstream stages have finished; phases are the levels
  of the stage graph, split the same way where a level does not fit.

GPUs are hard limits (a plan that cannot fit fails before anything starts). CPUs are shared: when
the stages of a phase declare more CPUs than the cluster has, every worker's CPU request is scaled
down so each stage still gets a worker (the operating system shares the cores); CPUs and GPUs left
over become extra workers for the stages that did not fix their `concurrency`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Schedule = Literal["stream", "barrier"]


class PlanError(RuntimeError):
    """The stages cannot fit the cluster; the message says what to change."""


@dataclass(frozen=True)
class StageNeed:
    """What one stage declares: per worker, and whether it talks to the LLM server mfpipe starts."""

    name: str
    level: int  # depth in the stage graph (ingest: 0)
    cpus: float
    gpus: float
    concurrency: int | None
    uses_server: bool = False


@dataclass(frozen=True)
class ServerNeed:
    """The vLLM server mfpipe starts (absent when llm.base_url is set)."""

    gpus: float  # whole GPUs: its tensor-parallel size (0 for the CPU build)
    cpus: float = 1.0
    min_gpus: float = 0.5  # the least share it may get when it must share a GPU
    memory_per_share: float = 0.92  # gpu-memory-utilization = share x this


@dataclass
class StagePlan:
    workers: int
    cpus: float  # per worker, as Ray is asked
    gpus: float  # per worker


@dataclass
class ServerPlan:
    gpus: float
    cpus: float
    gpu_memory_utilization: float | None  # None: no GPU (the CPU build)


@dataclass
class Phase:
    stages: list[str]
    server: ServerPlan | None = None
    cpu_scale: float = 1.0


@dataclass
class ResourcePlan:
    schedule: Schedule
    cpus: float
    gpus: float
    phases: list[Phase] = field(default_factory=list)
    stages: dict[str, StagePlan] = field(default_factory=dict)

    def phase_of(self, stage: str) -> int:
        return next(i for i, p in enumerate(self.phases) if stage in p.stages)

    def lines(self) -> list[str]:
        """The plan in words, for the banner."""
        out = [f"resources: {self.cpus:g} CPU, {self.gpus:g} GPU; schedule {self.schedule}, "
               f"{len(self.phases)} phase(s)"]
        for i, phase in enumerate(self.phases, 1):
            parts = []
            for name in phase.stages:
                s = self.stages[name]
                gpu = f", {s.gpus:g} GPU" if s.gpus else ""
                parts.append(f"{name} {s.workers}x({s.cpus:.2g} CPU{gpu})")
            if phase.server is not None:
                server = phase.server
                share = f"{server.gpus:g} GPU, gpu-memory-utilization {server.gpu_memory_utilization:.2f}" \
                    if server.gpu_memory_utilization is not None else f"{server.cpus:.2g} CPU"
                parts.append(f"LLM server ({share})")
            scaled = f" [CPU requests x{phase.cpu_scale:.2f} to fit]" if phase.cpu_scale < 1 else ""
            out.append(f"  phase {i}: " + ", ".join(parts) + scaled)
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def make_plan(needs: list[StageNeed], cpus: float, gpus: float, schedule: Schedule = "stream",
              server: ServerNeed | None = None, node_cpus: float | None = None) -> ResourcePlan:
    """Phases and pool sizes for `needs` (in pipeline order) on a cluster of `cpus` / `gpus`
    whose largest node has `node_cpus`."""
    for need in needs:
        if node_cpus is not None and need.cpus > node_cpus:
            raise PlanError(f"stage {need.name!r} needs {need.cpus:g} CPU(s) per worker, but no node of the Ray "
                            f"cluster has more than {node_cpus:g}. Lower {need.name}.resources.cpus.")
    plan = ResourcePlan(schedule, cpus, gpus)
    groups = [needs] if schedule == "stream" else _levels(needs)
    for group in groups:
        for members, server_gpus in _split(group, gpus, server):
            plan.phases.append(_size(members, cpus, gpus, server, server_gpus, plan.stages))
    return plan


def _levels(needs: list[StageNeed]) -> list[list[StageNeed]]:
    levels: dict[int, list[StageNeed]] = {}
    for need in needs:
        levels.setdefault(need.level, []).append(need)
    return [levels[k] for k in sorted(levels)]


def _gpu_total(members: list[StageNeed], server: ServerNeed | None, server_gpus: float) -> float:
    total = sum(m.gpus for m in members)
    if server is not None and any(m.uses_server for m in members):
        total += server_gpus
    return total


def _split(group: list[StageNeed], gpus: float, server: ServerNeed | None) -> list[tuple[list[StageNeed], float]]:
    """Consecutive runs of `group` that fit `gpus`, each with the server's share."""
    full = server.gpus if server is not None else 0.0
    phases: list[tuple[list[StageNeed], float]] = []
    current: list[StageNeed] = []
    for need in group:
        if need.gpus > gpus:
            have = "no GPUs" if gpus == 0 else f"{gpus:g}"
            raise PlanError(f"stage {need.name!r} needs {need.gpus:g} GPU(s) per worker, but the Ray cluster has "
                            f"{have}. Run with --profile cpu, set {need.name}.resources.gpus=0, or add GPUs.")
        if _gpu_total([*current, need], server, full) <= gpus + 1e-9:
            current.append(need)
            continue
        if current:
            phases.append((current, full))
        current = [need]
        if _gpu_total(current, server, full) > gpus + 1e-9:
            phases.append((current, _shrunk_server(need, gpus, server)))
            current = []
    if current:
        phases.append((current, full))
    return phases


def _shrunk_server(need: StageNeed, gpus: float, server: ServerNeed | None) -> float:
    """The server's share beside a stage that needs both it and a GPU of its own."""
    assert server is not None
    share = round(gpus - need.gpus, 6)
    if server.gpus > 1 or share < server.min_gpus:
        raise PlanError(
            f"stage {need.name!r} needs {need.gpus:g} GPU(s) per worker and the LLM server mfpipe starts needs "
            f"{server.gpus:g}, at the same time; the cluster has {gpus:g}. Point llm.base_url at a server of "
            f"its own (infra/vllm), lower {need.name}.resources.gpus, or allow a smaller server share "
            f"(llm.server.min_gpus, now {server.min_gpus:g}).")
    return share


def _size(members: list[StageNeed], cpus: float, gpus: float, server: ServerNeed | None, server_gpus: float,
          out: dict[str, StagePlan]) -> Phase:
    with_server = server is not None and any(m.uses_server for m in members)
    server_cpus = server.cpus if with_server else 0.0
    workers = {m.name: m.concurrency or 1 for m in members}
    declared = sum(m.cpus * workers[m.name] for m in members) + server_cpus
    scale = min(1.0, cpus / declared) if declared > 0 else 1.0
    used_cpu = declared * scale
    used_gpu = sum(m.gpus * workers[m.name] for m in members) + (server_gpus if with_server else 0.0)
    if used_gpu > gpus + 1e-9:
        fixed = ", ".join(f"{m.name} {workers[m.name]}" for m in members if m.concurrency)
        raise PlanError(f"the workers asked for ({fixed}) need {used_gpu:g} GPUs at once; the cluster has {gpus:g}")
    growing = [m for m in members if m.concurrency is None]
    while growing:
        grown = False
        for m in growing:
            cpu, gpu = m.cpus * scale, m.gpus
            if used_cpu + cpu <= cpus + 1e-9 and used_gpu + gpu <= gpus + 1e-9 and (cpu > 0 or gpu > 0):
                workers[m.name] += 1
                used_cpu += cpu
                used_gpu += gpu
                grown = True
        if not grown:
            break
    for m in members:
        out[m.name] = StagePlan(workers[m.name], round(m.cpus * scale, 4), m.gpus)
    plan_server = None
    if with_server:
        util = round(min(0.95, server_gpus * server.memory_per_share), 3) if server_gpus > 0 else None
        if util is not None and server_gpus >= 1:
            util = round(server.memory_per_share, 3)
        plan_server = ServerPlan(server_gpus, round(server_cpus * scale, 4), util)
    return Phase([m.name for m in members], plan_server, round(scale, 4))
