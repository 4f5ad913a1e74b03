"""Runs the planned stages: resources planned once, stages streaming songs to each other, stops that drain.

Per run: take the output folder (a lock, or a lease on object stores), clear what `--force` names,
join or start Ray, make the resource plan (`pipeline.plan`: phases, workers, the LLM server's GPU
share), then run the phases one after the other. In a phase every map stage runs in a thread of its
own (`pipeline.flow.StageFlow`) with its own Ray worker pool, taking songs as its upstream stages
commit them; driver-side stages (export) run once their upstream stages have finished. A first
SIGINT / SIGTERM drains (see `pipeline.stopping`); the run's summary records `interrupted`.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mfpipe import __version__

from ..schemas import RunInfo, utc_now
from ..store import OutputStore
from . import registry
from .config import PipelineConfig
from .flow import Board, FlowContext, RowReader, StageFlow, StageSummary
from .inputs import Discovery
from .plan import ResourcePlan, ServerNeed, StageNeed, make_plan
from .ray_runtime import cluster_capacity, init_ray, shutdown_ray
from .services import Services
from .stage import INPUTS, DriverContext, Stage
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
        self.plan: ResourcePlan | None = None

    # ------------------------------------------------------------ top level
    def execute(self, stage_names: list[str], discovery: Discovery | None) -> RunResult:
        result = RunResult(self.run.run_id, self.store.url,
                           ignored_inputs=list(discovery.ignored) if discovery else [])
        started = time.time()
        with self.store.lock(self.run.run_id, self.config.run.lease_seconds), self.stop.installed():
            self.store.remove_stale_temporaries()
            for name in self.force:
                self.store.clear(name)
            self._save_run(stage_names, discovery, result, started, status="running")
            status = "failed"
            try:
                result.stages = self._run(stage_names, discovery, result)
                result.interrupted = self.stop.exit_code
                status = "interrupted" if result.interrupted else "ok" if result.ok else "failed"
            finally:
                if self.services is not None:
                    self.services.close()
                self._save_run(stage_names, discovery, result, started, status=status)
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
        }
        self.store.save_run(self.run.run_id, {
            "config.yaml": self.config.to_yaml(),
            "summary.json": json.dumps(summary, indent=2),
        })

    # ------------------------------------------------------------ the run
    def _run(self, names: list[str], discovery: Discovery | None, result: RunResult) -> list[StageSummary]:
        stages = registry.stages()
        maps = [n for n in names if stages[n].kind == "map"]
        drivers = [n for n in names if stages[n].kind == "driver"]
        summaries: dict[str, StageSummary] = {}
        if maps and self._has_work(maps, discovery):
            # Ray starts here, in the main thread (it installs its own signal handlers there; ours
            # are put back below); a rerun with nothing left to do never pays for it.
            init_ray(self.config.run, address=self.ray_address)
            self.stop.reinstall()
            self._run_phases(maps, discovery, summaries, result)
        else:
            for name in maps:
                summaries[name] = self._nothing_to_do(stages[name], discovery)
        for name in drivers:
            summaries[name] = self._run_driver(stages[name], summaries)
        return [summaries[n] for n in names]

    def _nothing_to_do(self, cls: type[Stage], discovery: Discovery | None) -> StageSummary:
        summary = StageSummary(cls.name, skipped=self._pending(cls, discovery)[1])
        self.progress(cls.name, "done", summary)
        return summary

    def _run_phases(self, maps: list[str], discovery: Discovery | None, summaries: dict[str, StageSummary],
                    result: RunResult) -> None:
        stages = registry.stages()
        self.plan = self._make_plan(maps)
        result.plan = self.plan.lines()
        self.progress("run", "plan", result.plan)
        capacity = cluster_capacity()
        self.services = Services(nodes=int(capacity.get("nodes", 1)))
        board = Board()
        for name in registry.available():
            cls = stages[name]
            if cls.kind == "map" and (name in maps or any(name in stages[m].upstream() for m in maps)):
                board.load(self.store, name, cls.key)
        run = self.config.run
        ctx = FlowContext(self.store, board, RowReader(self.store, board), self.run, self.stop, self.services,
                          self.progress, time.monotonic(), set(maps), run.schedule, self.limit,
                          run.shard_max_rows, run.shard_max_mb, run.flush_seconds, run.outage_max_wait_s,
                          run.outage_song_strikes, run.stream_warmup)
        for i, phase in enumerate(self.plan.phases):
            self.services.server_plan = phase.server
            names = [n for n in maps if n in phase.stages]
            if self.stop.requested.is_set():
                for name in names:
                    summaries[name] = StageSummary(name, error="not run: the run was interrupted")
                    board.finish(name, failed=True)
                continue
            flows = [self._flow(ctx, stages[n], discovery, summaries) for n in names]
            threads = [threading.Thread(target=self._run_flow, args=(f, summaries), name=f"stage-{f.cls.name}",
                                        daemon=True) for f in flows if f is not None]
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.2)  # short joins: the main thread must take signals
            following = self.plan.phases[i + 1].server if i + 1 < len(self.plan.phases) else None
            self.services.release(following)

    def _flow(self, ctx: FlowContext, cls: type[Stage], discovery: Discovery | None,
              summaries: dict[str, StageSummary]) -> StageFlow | None:
        if ctx.schedule == "barrier":
            failed = [u for u in cls.upstream() if u in ctx.planned and ctx.board.lane(u).failed]
            if failed:
                summaries[cls.name] = StageSummary(cls.name, error=f"not run: upstream stage {failed[0]} failed")
                ctx.board.finish(cls.name, failed=True)
                self.progress(cls.name, "failed", summaries[cls.name])
                return None
        settings = cls.settings_from(self.config)
        plan = self.plan.stages[cls.name]
        sources = None
        if cls.requires[0] == INPUTS:
            sources = list(discovery.sources) if discovery else []
            if self.limit is not None:
                sources = sources[: self.limit]
        return StageFlow(ctx, cls, settings, plan.workers, plan.cpus, plan.gpus, sources=sources)

    @staticmethod
    def _run_flow(flow: StageFlow, summaries: dict[str, StageSummary]) -> None:
        summaries[flow.cls.name] = flow.run()

    # ------------------------------------------------------------ planning
    def _make_plan(self, maps: list[str]) -> ResourcePlan:
        stages = registry.stages()
        capacity = cluster_capacity()
        levels: dict[str, int] = {}
        needs = []
        llm_users = []
        for name in maps:
            cls = stages[name]
            levels[name] = 1 + max((levels.get(u, -1) for u in cls.upstream() if u in maps), default=-1)
            settings = cls.settings_from(self.config)
            res = cls.resources(settings)
            uses_server = "llm" in cls.reads and not settings.shared["llm"].base_url
            if uses_server:
                llm_users.append(settings.shared["llm"])
            needs.append(StageNeed(name, levels[name], res.cpus, res.gpus, res.concurrency, uses_server))
        server = None
        if llm_users:
            from ..backends.vllm_server import tensor_parallel_size

            spec = llm_users[0].server
            gpus = spec.gpus if spec.gpus is not None else (
                float(tensor_parallel_size(spec.args)) if capacity["GPU"] > 0 else 0.0)
            server = ServerNeed(gpus=gpus, min_gpus=spec.min_gpus, memory_per_share=spec.memory_per_share)
        gpus = capacity["GPU"]
        if not self.config.run.fail_fast_on_resources:
            # Autoscaling clusters: plan for what the stages declare; GPU nodes appear on demand.
            gpus = max(gpus, sum(n.gpus for n in needs) + (server.gpus if server else 0.0))
        return make_plan(needs, capacity["CPU"], gpus, self.config.run.schedule, server, capacity["node_CPU"])

    # ------------------------------------------------------------ work left
    def _pending(self, cls: type[Stage], discovery: Discovery | None) -> tuple[int, int]:
        """(units still to do, units already done) as the output folder says now."""
        store = self.store
        done = store.keys(store.stage_dir(cls.name), cls.key)
        done |= store.keys(store.rejects_dir(cls.name), cls.key, where=("retryable", False))
        base = cls.requires[0]
        if base == INPUTS:
            units = set(discovery.sources if discovery else [])
            if self.limit is not None:
                units = set(sorted(units)[: self.limit])
        else:
            units = store.keys(store.stage_dir(base), "song_id")
        return len(units - done), len(units & done)

    def _has_work(self, maps: list[str], discovery: Discovery | None) -> bool:
        return any(self._pending(registry.stages()[name], discovery)[0] for name in maps)

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
