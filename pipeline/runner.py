"""Runs the planned stages: resources planned once, stages streaming songs to each other, stops that drain.

Per run: take the output folder (a lock, or a lease on object stores), clear what `--force` names,
read what the folder holds once (`pipeline.board`, `pipeline.ledger`), join or start Ray only when
something is left to do, make the resource plan (`pipeline.plan`: phases, workers, the GPU shares of
the services the stages declare, `pipeline.services`), then run the phases one after the other. In a
phase every map stage runs in a thread of its own (`pipeline.flow.StageFlow`) with its own Ray worker
pool, taking songs as its upstream stages commit them; driver-side stages (export) run once their
upstream stages have finished. A first SIGINT / SIGTERM drains (see `pipeline.stopping`); the run's
summary records `interrupted`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mfpipe import __version__

from ..devices import REHEARSAL_ENV
from ..gpumemory import gpu_memory_per_gpu
from ..schemas import RunInfo, utc_now
from ..store import OutputStore, OutputStoreError
from . import registry
from .board import Board, RowReader
from .capacity import Capacity
from .config import PipelineConfig
from .flow import FlowContext, StageFlow, StageSummary
from .inputs import Discovery
from .ledger import Ledger
from .plan import Phase, ResourcePlan, ServiceNeed, StageNeed, make_plan
from .ray_runtime import cluster_address, cluster_capacity, init_ray, shutdown_ray
from .services import Services, service_needs
from .stage import INPUTS, CorpusGate, DriverContext, Stage
from .stopping import StopControl

__all__ = ["ProgressFn", "RunResult", "Runner", "StageSummary", "code_revision", "new_run_id"]

# Called with (stage, event, value): "plan" (lines), "start", "update" (counts), "done" / "failed" (summary).
ProgressFn = Callable[[str, str, Any], None]


@dataclass
class RunResult:
    run_id: str
    output: str
    stages: list[StageSummary] = field(default_factory=list)
    ignored_inputs: list[str] = field(default_factory=list)
    interrupted: int | None = None  # the exit code of the signal that stopped the run (130, 143)
    plan: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.interrupted is None and all(s.error is None for s in self.stages)


def code_revision() -> str | None:
    """The git commit of this checkout, when mfpipe runs from one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@contextlib.contextmanager
def _rehearsal(on: bool) -> Iterator[None]:
    """While the run executes, `mfpipe.devices` on the driver and in the workers knows whether declared
    GPUs are a rehearsal on the CPU (run.cpu_rehearsal)."""
    before = os.environ.pop(REHEARSAL_ENV, None)
    if on:
        os.environ[REHEARSAL_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(REHEARSAL_ENV, None)
        if before is not None:
            os.environ[REHEARSAL_ENV] = before


def new_run_id() -> str:
    return utc_now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Runner:
    def __init__(self, config: PipelineConfig, output: str, *, limit: int | None = None,
                 force: list[str] | None = None, ray_address: str | None = None,
                 progress: ProgressFn | None = None):
        self.config = config
        self.store = OutputStore(output)
        self.limit = limit
        self.force = list(force or [])
        self.ray_address = ray_address
        self.progress = progress or (lambda *_: None)
        self.run = RunInfo(run_id=new_run_id(), config_hash=config.content_hash(), code_rev=code_revision())
        self.stop = StopControl(config.run.drain_seconds)
        self.services: Services | None = None
        self.withdrawn: set[str] = set()  # songs with rows that the corpus left out: no stage takes them
        self.gates: dict[str, CorpusGate] = {}
        self.plan: ResourcePlan | None = None

    # ------------------------------------------------------------ top level
    def execute(self, stage_names: list[str], discovery: Discovery | None) -> RunResult:
        result = RunResult(self.run.run_id, self.store.url,
                           ignored_inputs=list(discovery.ignored) if discovery else [])
        started = time.time()
        with self.store.lock(self.run.run_id, self.config.run.lease_seconds), self.stop.installed(), \
                _rehearsal(self.config.run.cpu_rehearsal):
            self.store.remove_stale_temporaries()
            for name in self.force:
                self.store.clear(name)
            self._save_run(stage_names, discovery, result, started, status="running")
            status = "failed"
            try:
                result.stages = self._run(stage_names, discovery, result)
                result.interrupted = self.stop.exit_code
                status = "interrupted" if result.interrupted else "ok" if result.ok else "failed"
            except OutputStoreError as exc:
                self.stop.fail(exc)
            finally:
                if self.services is not None:
                    self.services.close()
                try:
                    self._save_run(stage_names, discovery, result, started, status=status)
                except OutputStoreError as exc:  # the folder cannot take the run's record either
                    self.stop.fail(exc)
        if self.stop.failure is not None:
            raise self.stop.failure  # one clear cause (the CLI prints it as one line)
        return result

    def close(self) -> None:
        if self.services is not None:
            self.services.close()
        shutdown_ray()

    def _save_run(self, stages: list[str], discovery: Discovery | None, result: RunResult,
                  started: float, status: str) -> None:
        summary = {
            "run_id": self.run.run_id,
            "status": status,
            "mfpipe_version": __version__,
            "code_rev": self.run.code_rev,
            "config_hash": self.run.config_hash,
            "profile": self.config.profile,
            "stages": stages,
            "inputs": len(discovery.sources) if discovery else None,
            "ignored_inputs": result.ignored_inputs,
            "limit": self.limit,
            "force": self.force,
            "schedule": self.config.run.schedule,
            "plan": self.plan.to_dict() if self.plan else None,
            "interrupted_by_signal": (result.interrupted - 128) if result.interrupted else None,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 3),
            "summary": [asdict(s) for s in result.stages],
            "costs": self._costs() if status != "running" else None,
        }
        self.store.save_run(self.run.run_id, {
            "config.yaml": self.config.to_yaml(),
            "summary.json": json.dumps(summary, indent=2),
        })

    def _costs(self) -> dict[str, Any] | None:
        """What the run's songs cost, per stage: totals and per-song medians (from OUT/_costs)."""
        from ..curate import costs

        try:
            return costs.summary(costs.cost_table(self.store, self.run.run_id))
        except Exception as exc:  # noqa: BLE001 - a summary without costs beats no summary
            return {"error": f"{type(exc).__name__}: {exc}"}

    # ------------------------------------------------------------ the run
    def _run(self, names: list[str], discovery: Discovery | None, result: RunResult) -> list[StageSummary]:
        stages = registry.stages()
        maps = [n for n in names if stages[n].kind == "map"]
        drivers = [n for n in names if stages[n].kind == "driver"]
        sources = list(discovery.sources) if discovery else []
        summaries: dict[str, StageSummary] = {}
        self.gates = self._open_gates(maps)  # before the work check: a new exclusion may withdraw songs
        board = self._load_board(maps)
        ledger = Ledger(board, self.limit)
        if maps and any(ledger.counts(stages[name], sources)[0] for name in maps):
            # Ray starts here, in the main thread (it installs its own signal handlers there; ours
            # are put back below); a rerun with nothing left to do never pays for it.
            init_ray(self.config.run, address=self.ray_address)
            self.stop.reinstall()
            self._run_phases(maps, sources, board, ledger, summaries, result)
        else:
            for name in maps:
                summaries[name] = StageSummary(name, skipped=ledger.counts(stages[name], sources)[1])
                self.progress(name, "done", summaries[name])
        self._close_gates(summaries)
        for name in drivers:
            summaries[name] = self._run_driver(stages[name], summaries)
        return [summaries[n] for n in names]

    def _load_board(self, maps: list[str]) -> Board:
        """What the output folder holds, read once: the planned stages and the stages they read."""
        stages = registry.stages()
        board = Board(withdrawn=self.withdrawn)
        for name in registry.available():
            cls = stages[name]
            if cls.kind == "map" and (name in maps or any(name in stages[m].upstream() for m in maps)):
                board.load(self.store, name, cls.key)
        return board

    def _open_gates(self, maps: list[str]) -> dict[str, CorpusGate]:
        """The stages' corpus gates (ingest: fingerprint screening); they fill `self.withdrawn`."""
        stages = registry.stages()
        gates = {name: stages[name].corpus_gate(stages[name].settings_from(self.config), self.store, self.run,
                                                self.withdrawn) for name in maps}
        return {name: gate for name, gate in gates.items() if gate is not None}

    def _close_gates(self, summaries: dict[str, StageSummary]) -> None:
        for name, gate in self.gates.items():
            gate.close()
            if name in summaries:
                summaries[name].notes.extend(gate.notes)

    def _run_phases(self, maps: list[str], sources: list[str], board: Board, ledger: Ledger,
                    summaries: dict[str, StageSummary], result: RunResult) -> None:
        stages = registry.stages()
        self.plan = self._make_plan(maps)
        result.plan = self.plan.lines()
        self.progress("run", "plan", result.plan)
        self.services = Services(nodes=int(cluster_capacity().get("nodes", 1)))
        ctx = FlowContext(self.store, board, RowReader(self.store, board), ledger, self.run, self.config.run,
                          self.stop, self.services, self.progress, time.monotonic(), set(maps), gates=self.gates)
        for i, phase in enumerate(self.plan.phases):
            self.services.plans = phase.services
            ctx.capacity = self._capacity(phase)
            names = [n for n in maps if n in phase.stages]
            if self.stop.requested.is_set():
                for name in names:
                    summaries[name] = StageSummary(name, error="not run: the run was interrupted")
                    board.finish(name, failed=True)
                continue
            flows = [self._flow(ctx, stages[n], sources, summaries) for n in names]
            threads = [threading.Thread(target=self._run_flow, args=(f, summaries), name=f"stage-{f.name}",
                                        daemon=True) for f in flows if f is not None]
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.2)  # short joins: the main thread must take signals
            following = self.plan.phases[i + 1].services if i + 1 < len(self.plan.phases) else {}
            self.services.release(following)

    def _capacity(self, phase: Phase) -> Capacity:
        """The phase's resources for its stages' elastic pools: the cluster's, less what its servers hold."""
        capacity = Capacity(self.plan.cpus, self.plan.gpus)
        for name, server in phase.services.items():
            whole = int(server.gpus + 1e-9)  # each of its GPUs (a tensor-parallel server holds several)
            shares = [1.0] * whole + ([server.gpus - whole] if server.gpus - whole > 1e-9 else []) or [0.0]
            for n, share in enumerate(shares):
                capacity.take(f"service:{name}", server.cpus if n == 0 else 0.0, share)
        for name in phase.stages:
            capacity.plan(name, self.plan.stages[name].workers)
        return capacity

    def _flow(self, ctx: FlowContext, cls: type[Stage], sources: list[str],
              summaries: dict[str, StageSummary]) -> StageFlow | None:
        if ctx.config.schedule == "barrier":
            failed = [u for u in cls.upstream() if u in ctx.planned and ctx.board.lane(u).failed]
            if failed:
                summaries[cls.name] = StageSummary(cls.name, error=f"not run: upstream stage {failed[0]} failed")
                ctx.board.finish(cls.name, failed=True)
                self.progress(cls.name, "failed", summaries[cls.name])
                return None
        inputs = ctx.ledger.inputs(sources) if cls.requires[0] == INPUTS else None
        return StageFlow(ctx, cls, cls.settings_from(self.config), self.plan.stages[cls.name], sources=inputs)

    @staticmethod
    def _run_flow(flow: StageFlow, summaries: dict[str, StageSummary]) -> None:
        summaries[flow.name] = flow.run()

    # ------------------------------------------------------------ planning
    def _make_plan(self, maps: list[str]) -> ResourcePlan:
        stages = registry.stages()
        capacity = cluster_capacity()
        levels: dict[str, int] = {}
        needs = []
        services: dict[str, ServiceNeed] = {}
        for name in maps:
            cls = stages[name]
            levels[name] = 1 + max((levels.get(u, -1) for u in cls.upstream() if u in maps), default=-1)
            settings = cls.settings_from(self.config)
            res = cls.resources(settings)
            started = service_needs(cls, settings, has_gpus=capacity["GPU"] > 0)
            for service, need in started.items():
                services.setdefault(service, need)  # one server per service, shared by its stages
            needs.append(StageNeed(name, levels[name], res.cpus, res.gpus, res.concurrency, tuple(started),
                                   memory=cls.gpu_memory(settings)))
        gpus = capacity["GPU"]
        if not self.config.run.fail_fast_on_resources:
            # Autoscaling clusters: plan for what the stages declare; GPU nodes appear on demand.
            gpus = max(gpus, sum(n.gpus for n in needs) + sum(s.gpus for s in services.values()))
        memory = gpu_memory_per_gpu(self.config.run.gpu_memory_gb, capacity, local=self.ray_address is None
                                    and cluster_address(self.config.run) is None) if gpus else None
        return make_plan(needs, capacity["CPU"], gpus, self.config.run.schedule, services, capacity["node_CPU"],
                         gpu_memory=memory)

    # ------------------------------------------------------------ driver-side stages
    def _run_driver(self, cls: type[Stage], summaries: dict[str, StageSummary]) -> StageSummary:
        """A driver-side stage (export): once, here, after its upstream stages, with the store,
        the run's facts and progress."""
        failed = [u for u in cls.upstream() if u in summaries and summaries[u].error]
        if self.stop.requested.is_set():
            summary = StageSummary(cls.name, error="not run: the run was interrupted")
        elif failed:
            summary = StageSummary(cls.name, error=f"not run: upstream stage {failed[0]} failed")
        else:
            started = time.time()
            summary = StageSummary(cls.name, workers=1)
            try:
                stage = cls(cls.settings_from(self.config), self.run)
                outcome = stage.run_driver(DriverContext(self.store, self.run, self.progress))
                summary.rows_in, summary.rows_out = outcome.rows_in, outcome.rows_out
            except Exception as exc:  # noqa: BLE001 - reported in the summary
                summary.error = f"{type(exc).__name__}: {exc}"
            summary.seconds = round(time.time() - started, 3)
        self.progress(cls.name, "failed" if summary.error else "done", summary)
        return summary
