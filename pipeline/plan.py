"""The run's resource plan: which stages run together, how many workers each gets, and what the shared
services (model servers the stages declare, e.g. the LLM's vLLM server) hold. One place does the GPU
accounting, and Ray's bookkeeping follows it. The plan knows services only by the needs they state
(`ServiceNeed`); it never names one.

Every GPU holder asks Ray for its share: each stage worker for `resources.gpus` (a fraction where the
model is small), and a server that mfpipe starts for its share of whole GPUs (e.g. its tensor-parallel
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

GPU memory is counted in bytes when it is known (`mfpipe.gpumemory`: each GPU's memory from
`run.gpu_memory_gb`, nvidia-smi or Ray's accelerator type; each holder's need from its checkpoint): a
stage worker's GPU share is its need in GiB over the GPU's memory, the server's least share is its
weights per GPU plus the least KV cache (`llm.server.min_kv_cache_gb`), and the server's
`--gpu-memory-utilization` is what its share leaves in bytes. A plan whose holders cannot fit their
bytes is refused before anything starts, with what to set. When the memory is not known, the declared
shares are used as they are (and the banner says so).

GPUs are hard limits (a plan that cannot fit fails before anything starts). CPUs are shared: when
the stages of a phase declare more CPUs than the cluster has, every worker's CPU request is scaled
down so each stage still gets a worker (the operating system shares the cores); CPUs and GPUs left
over become extra workers for the stages that did not fix their `concurrency`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from ..gpumemory import CUDA_CONTEXT_GIB, GpuMemory

Schedule = Literal["stream", "barrier"]


class PlanError(RuntimeError):
    """The stages cannot fit the cluster; the message says what to change."""


@dataclass(frozen=True)
class StageNeed:
    """What one stage declares: per worker, and the services mfpipe starts that it uses."""

    name: str
    level: int  # depth in the stage graph (ingest: 0)
    cpus: float
    gpus: float
    concurrency: int | None
    services: tuple[str, ...] = ()  # names of the services (with a `ServiceNeed`) it uses
    memory: GpuMemory | None = None  # GPU memory one worker needs (None: unknown; the share decides)


@dataclass(frozen=True)
class ServiceNeed:
    """A server mfpipe starts for a service (absent when the service is an endpoint given by the config)."""

    gpus: float  # whole GPUs (e.g. a tensor-parallel size; 0 for a CPU server)
    cpus: float = 1.0
    min_gpus: float = 0.5  # the least share it may get when it must share a GPU (memory unknown)
    memory_per_share: float = 0.92  # gpu-memory-utilization of whole GPUs (and of a share, memory unknown)
    memory: GpuMemory | None = None  # GPU memory it needs per GPU: weights / TP + the least KV cache
    label: str = "server"  # for the banner, e.g. "LLM server"


@dataclass
class StagePlan:
    workers: int  # planned: what the stage starts with and is owed back when others grew into it
    cpus: float  # per worker, as Ray is asked
    gpus: float  # per worker
    memory_gib: float | None = None  # GPU memory one worker needs, when known
    max_workers: int = 0  # the most it may grow to, in what finished or starved stages free (elastic pools)


@dataclass
class ServicePlan:
    gpus: float
    cpus: float
    gpu_memory_utilization: float | None  # None: no GPU (a CPU server)
    memory_gib: float | None = None  # GPU memory it may use per GPU, when known
    label: str = "server"


@dataclass
class Phase:
    stages: list[str]
    services: dict[str, ServicePlan] = field(default_factory=dict)  # the servers running in this phase
    cpu_scale: float = 1.0


@dataclass
class ResourcePlan:
    schedule: Schedule
    cpus: float
    gpus: float
    phases: list[Phase] = field(default_factory=list)
    stages: dict[str, StagePlan] = field(default_factory=dict)
    gpu_memory_gib: float | None = None  # memory of one GPU, when known
    gpu_memory_source: str = ""

    def phase_of(self, stage: str) -> int:
        return next(i for i, p in enumerate(self.phases) if stage in p.stages)

    def lines(self) -> list[str]:
        """The plan in words, for the banner."""
        memory = ""
        if self.gpus and self.gpu_memory_gib:
            memory = f" of {self.gpu_memory_gib:g} GiB each ({self.gpu_memory_source})"
        elif self.gpus:
            memory = " (memory unknown: declared shares; set run.gpu_memory_gb to plan in bytes)"
        out = [f"resources: {self.cpus:g} CPU, {self.gpus:g} GPU{memory}; schedule {self.schedule}, "
               f"{len(self.phases)} phase(s)"]
        for i, phase in enumerate(self.phases, 1):
            parts = []
            for name in phase.stages:
                s = self.stages[name]
                gib = f" = {s.memory_gib:.1f} GiB" if s.memory_gib is not None and s.gpus else ""
                gpu = f", {s.gpus:g} GPU{gib}" if s.gpus else ""
                grows = f", grows to {s.max_workers}" if s.max_workers > s.workers else ""
                parts.append(f"{name} {s.workers}x({s.cpus:.2g} CPU{gpu}{grows})")
            for server in phase.services.values():
                gib = f" = {server.memory_gib:.1f} GiB per GPU" if server.memory_gib is not None else ""
                share = f"{server.gpus:g} GPU, gpu-memory-utilization {server.gpu_memory_utilization:.2f}{gib}" \
                    if server.gpu_memory_utilization is not None else f"{server.cpus:.2g} CPU"
                parts.append(f"{server.label} ({share})")
            scaled = f" [CPU requests x{phase.cpu_scale:.2f} to fit]" if phase.cpu_scale < 1 else ""
            out.append(f"  phase {i}: " + ", ".join(parts) + scaled)
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def make_plan(needs: list[StageNeed], cpus: float, gpus: float, schedule: Schedule = "stream",
              services: dict[str, ServiceNeed] | None = None, node_cpus: float | None = None,
              gpu_memory: GpuMemory | None = None) -> ResourcePlan:
    """Phases and pool sizes for `needs` (in pipeline order) on a cluster of `cpus` / `gpus` whose largest
    node has `node_cpus` and whose GPUs have `gpu_memory` each (None: unknown, shares as declared);
    `services`: the servers mfpipe starts, by name, for the stages that use them."""
    for need in needs:
        if node_cpus is not None and need.cpus > node_cpus:
            raise PlanError(f"stage {need.name!r} needs {need.cpus:g} CPU(s) per worker, but no node of the Ray "
                            f"cluster has more than {node_cpus:g}. Lower {need.name}.resources.cpus.")
    services = dict(services or {})
    needs = [replace(n, services=tuple(s for s in n.services if s in services)) for n in needs]
    if gpu_memory is not None and gpus > 0:
        needs = [_share_from_bytes(n, gpu_memory) for n in needs]
        services = {name: _service_from_bytes(s, gpu_memory) for name, s in services.items()}
    plan = ResourcePlan(schedule, cpus, gpus, gpu_memory_gib=gpu_memory.gib if gpu_memory else None,
                        gpu_memory_source=gpu_memory.source if gpu_memory else "")
    groups = [needs] if schedule == "stream" else _levels(needs)
    for group in groups:
        for members, shares in _split(group, gpus, services, gpu_memory):
            plan.phases.append(_size(members, cpus, gpus, services, shares, plan.stages, gpu_memory))
    return plan


def _share_from_bytes(need: StageNeed, gpu: GpuMemory) -> StageNeed:
    """A GPU stage's share per worker from its bytes: need / the GPU's memory (rounded up to 1 %)."""
    if not need.gpus or need.memory is None:
        return need
    if need.memory.gib > gpu.gib:
        raise PlanError(f"a {need.name} worker needs {need.memory.gib:.1f} GiB of GPU memory "
                        f"({need.memory.source}); the GPUs have {gpu.gib:g} GiB ({gpu.source}). Lower "
                        f"{need.name}.generate_batch / batch sizes, or use GPUs with more memory.")
    return replace(need, gpus=min(1.0, math.ceil(need.memory.gib / gpu.gib * 100) / 100))


def _service_from_bytes(service: ServiceNeed, gpu: GpuMemory) -> ServiceNeed:
    """A server's least share from its bytes; refused when even a whole GPU cannot hold it."""
    if service.memory is None or not service.gpus:
        return service
    usable = service.memory_per_share * gpu.gib
    if service.memory.gib > usable:
        raise PlanError(f"the {service.label} needs {service.memory.gib:.1f} GiB per GPU ({service.memory.source}); "
                        f"{service.memory_per_share:g} of a {gpu.gib:g} GiB GPU is {usable:.1f} GiB. Spread it "
                        f"over more GPUs (its tensor-parallel size), use GPUs with more memory, or point the stages "
                        f"at a server of its own (infra/).")
    return replace(service, min_gpus=min(1.0, math.ceil(service.memory.gib / gpu.gib * 100) / 100))


def _levels(needs: list[StageNeed]) -> list[list[StageNeed]]:
    levels: dict[int, list[StageNeed]] = {}
    for need in needs:
        levels.setdefault(need.level, []).append(need)
    return [levels[k] for k in sorted(levels)]


def _used(members: list[StageNeed]) -> list[str]:
    """The services the members use, in a stable order."""
    return list(dict.fromkeys(s for m in members for s in m.services))


def _shares(members: list[StageNeed], workers: dict[str, int] | None, shares: dict[str, float]) -> list[float]:
    """Every GPU share the phase holds at once: one per stage worker, and each running server's GPUs."""
    out = [m.gpus for m in members for _ in range((workers or {}).get(m.name, 1)) if m.gpus > 0]
    for name in _used(members):
        out += _split_share(shares.get(name, 0.0))
    return out


def packs_on_gpus(shares: list[float], gpus: float) -> bool:
    """Whether these shares fit on `gpus` GPUs, each holder on one GPU (first fit, largest first: how
    Ray places fractional GPU requests, which it never splits across GPUs)."""
    bins = [1.0] * int(gpus + 1e-9)
    for share in sorted(shares, reverse=True):
        for i, free in enumerate(bins):
            if share <= free + 1e-9:
                bins[i] = free - share
                break
        else:
            return False
    return True


def _split(group: list[StageNeed], gpus: float, services: dict[str, ServiceNeed],
           gpu_memory: GpuMemory | None) -> list[tuple[list[StageNeed], dict[str, float]]]:
    """Consecutive runs of `group` that fit `gpus`, each with its services' shares."""
    full = {name: s.gpus for name, s in services.items()}
    phases: list[tuple[list[StageNeed], dict[str, float]]] = []
    current: list[StageNeed] = []
    for need in group:
        if need.gpus > gpus:
            have = "no GPUs" if gpus == 0 else f"{gpus:g}"
            raise PlanError(f"stage {need.name!r} needs {need.gpus:g} GPU(s) per worker, but the Ray cluster has "
                            f"{have}. Run with --profile cpu, set {need.name}.resources.gpus=0, or add GPUs.")
        if packs_on_gpus(_shares([*current, need], None, full), gpus):
            current.append(need)
            continue
        if current:
            phases.append((current, full))
        current = [need]
        if not packs_on_gpus(_shares(current, None, full), gpus):
            phases.append((current, _shrunk_services(need, gpus, services, gpu_memory)))
            current = []
    if current:
        phases.append((current, full))
    return phases


def _shrunk_services(need: StageNeed, gpus: float, services: dict[str, ServiceNeed],
                     gpu_memory: GpuMemory | None) -> dict[str, float]:
    """The share of the one server beside a stage that needs both it and a GPU of its own."""
    full = {name: s.gpus for name, s in services.items()}
    if len(need.services) != 1:
        raise PlanError(f"stage {need.name!r} and the servers it uses ({', '.join(need.services)}) need more "
                        f"than the cluster's {gpus:g} GPU(s) at once. Point the stage at servers of their own, "
                        f"or add GPUs.")
    (name,) = need.services
    service = services[name]
    share = round(gpus - need.gpus, 6)
    if service.gpus > 1 or share < service.min_gpus - 1e-9:
        if gpu_memory is not None and service.memory is not None and need.memory is not None:
            total = need.memory.gib + service.memory.gib
            raise PlanError(
                f"stage {need.name!r} ({need.memory.gib:.1f} GiB per worker: {need.memory.source}) and the "
                f"{service.label} mfpipe starts ({service.memory.gib:.1f} GiB: {service.memory.source}) need "
                f"{total:.1f} GiB at once; the cluster has {gpus:g} GPU(s) of {gpu_memory.gib:g} GiB. Point "
                f"{need.name} at a server of its own (for the LLM: llm.base_url, infra/vllm), add a GPU, or "
                f"use GPUs with more memory.")
        raise PlanError(
            f"stage {need.name!r} needs {need.gpus:g} GPU(s) per worker and the {service.label} mfpipe starts "
            f"needs {service.gpus:g}, at the same time; the cluster has {gpus:g}. Point {need.name} at a server "
            f"of its own (for the LLM: llm.base_url, infra/vllm), lower {need.name}.resources.gpus, or allow a "
            f"smaller server share (for the LLM: llm.server.min_gpus, now {service.min_gpus:g}).")
    return {**full, name: share}


def _size(members: list[StageNeed], cpus: float, gpus: float, services: dict[str, ServiceNeed],
          shares: dict[str, float], out: dict[str, StagePlan], gpu_memory: GpuMemory | None) -> Phase:
    used = _used(members)
    service_cpus = sum(services[name].cpus for name in used)
    workers = {m.name: m.concurrency or 1 for m in members}
    declared = sum(m.cpus * workers[m.name] for m in members) + service_cpus
    scale = min(1.0, cpus / declared) if declared > 0 else 1.0
    used_cpu = declared * scale
    if not packs_on_gpus(_shares(members, workers, shares), gpus):
        fixed = ", ".join(f"{m.name} {workers[m.name]}" for m in members if m.concurrency)
        used_gpu = sum(m.gpus * workers[m.name] for m in members) + sum(shares.get(n, 0.0) for n in used)
        raise PlanError(f"the workers asked for ({fixed}) need {used_gpu:g} GPUs at once; the cluster has {gpus:g}")
    growing = [m for m in members if m.concurrency is None]
    while growing:
        grown = False
        for m in growing:
            cpu = m.cpus * scale
            if used_cpu + cpu > cpus + 1e-9 or (cpu <= 0 and m.gpus <= 0):
                continue
            trial = {**workers, m.name: workers[m.name] + 1}
            if m.gpus and not packs_on_gpus(_shares(members, trial, shares), gpus):
                continue
            workers = trial
            used_cpu += cpu
            grown = True
        if not grown:
            break
    service_shares = [x for name in used for x in _split_share(shares.get(name, 0.0))]
    for m in members:
        memory = round(m.gpus * gpu_memory.gib, 2) if gpu_memory is not None and m.gpus else None
        grown = _grow_alone(m, workers[m.name], cpus - service_cpus * scale, gpus, scale, service_shares)
        out[m.name] = StagePlan(workers[m.name], round(m.cpus * scale, 4), m.gpus, memory, grown)
    plans = {name: ServicePlan(shares[name], round(services[name].cpus * scale, 4),
                               *_service_memory(services[name], shares[name], gpu_memory), label=services[name].label)
             for name in used}
    return Phase([m.name for m in members], plans, round(scale, 4))


def _split_share(share: float) -> list[float]:
    whole = int(share + 1e-9)
    return [1.0] * whole + ([round(share - whole, 6)] if share - whole > 1e-9 else [])


def _grow_alone(m: StageNeed, workers: int, cpus: float, gpus: float, scale: float,
                service_shares: list[float], cap: int = 64) -> int:
    """The most workers `m` could have if it had the phase to itself (beside the servers): its pool grows
    towards this as other stages finish or starve."""
    if m.concurrency:
        return m.concurrency
    cpu = m.cpus * scale
    if cpu <= 0 and m.gpus <= 0:
        return workers
    most = workers
    while most < cap:
        if cpu > 0 and cpu * (most + 1) > cpus + 1e-9:
            break
        if m.gpus and not packs_on_gpus(service_shares + [m.gpus] * (most + 1), gpus):
            break
        most += 1
    return most


def _service_memory(service: ServiceNeed, share: float,
                    gpu_memory: GpuMemory | None) -> tuple[float | None, float | None]:
    """(--gpu-memory-utilization, GiB it may use per GPU) for a server's share."""
    if share <= 0:
        return None, None
    if share >= 1:
        util = round(service.memory_per_share, 3)
    elif gpu_memory is not None and service.memory is not None:
        # From bytes: the GPU's memory less what the stage workers beside it need (their own CUDA
        # contexts included), less a margin for the server's own allocator fragmentation.
        util = round(share - CUDA_CONTEXT_GIB / gpu_memory.gib / 2, 3)
    else:
        util = round(min(0.95, share * service.memory_per_share), 3)
    return util, round(util * gpu_memory.gib, 2) if gpu_memory is not None else None
