"""Runs planned stages on Ray Data and streams their results into Parquet shards.

Per stage: work out which units are still to do (resume), build the input
dataset (base rows + upstream outputs joined on song_id, each upstream nested
as one struct column named after its stage), run one `map_batches` over an
actor pool sized by the stage's declared resources, and stream the results to
the stage's shard writer and the rejects writer. Stages whose upstream stages
are finished run concurrently (the GPU captioner overlaps the CPU MIR pool).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from mfpipe import __version__

from ..schemas import Reject, RunInfo, SongRecord, arrow_schema, to_table, utc_now
from ..store import OutputStore
from . import registry
from .config import PipelineConfig
from .inflight import InflightLedger, run_guarded
from .inputs import Discovery
from .ray_runtime import check_resources, cluster_capacity, init_ray, pool_size, shutdown_ray
from .stage import INPUTS, DriverContext, Stage, StageSettings

RESULT_SCHEMA = pa.schema([("key", pa.string()), ("kind", pa.string()), ("payload", pa.string())])


@dataclass
class StageSummary:
    stage: str
    rows_in: int = 0  # units sent to the stage this run
    rows_out: int = 0  # records written
    rejected: int = 0  # rejects written
    skipped: int = 0  # already done by an earlier run (resume)
    seconds: float = 0.0
    workers: int = 0
    error: str | None = None


@dataclass
class RunResult:
    run_id: str
    output: str
    stages: list[StageSummary] = field(default_factory=list)
    ignored_inputs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.error is None for s in self.stages)


# Called with (stage, event, value): "start" (total units), "advance" (n), "done" (summary).
ProgressFn = Callable[[str, str, Any], None]


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


# ------------------------------------------------------------------ workers


class StageWorker:
    """The Ray Data callable: one per actor; builds the stage and runs `setup` once.

    `bind` makes a subclass that carries the stage, config and run facts as class
    attributes, so the actor has no constructor arguments for Ray to park in the
    object store.
    """

    stage_cls: type[Stage]
    settings_json: str
    run_info: RunInfo
    inflight: InflightLedger

    @classmethod
    def bind(cls, stage_cls: type[Stage], settings: StageSettings, run: RunInfo,
             inflight: InflightLedger) -> type["StageWorker"]:
        return type(f"{stage_cls.__name__}Worker", (cls,),
                    {"stage_cls": stage_cls, "settings_json": settings.to_json(), "run_info": run,
                     "inflight": inflight})

    def __init__(self) -> None:
        self.stage = self.stage_cls(self.stage_cls.settings_from_json(self.settings_json), self.run_info)
        self.stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        key = self.stage.key
        results = run_guarded(self.inflight, batch.to_pylist(), lambda row: str(row.get(key)),
                              self.stage.process_safely, self._crashed)
        return pa.table(
            {
                "key": [str(getattr(r, key, None) or "") for r in results],
                "kind": ["reject" if isinstance(r, Reject) else "record" for r in results],
                "payload": [r.model_dump_json() for r in results],
            },
            schema=RESULT_SCHEMA,
        )

    def _crashed(self, row: dict) -> Reject:
        return self.stage.reject(row, "worker_crash",
                                 "the worker process died while processing this song alone (a crash in a "
                                 "native library or the memory limit); the rest of the run went on",
                                 retryable=True)

    def __del__(self) -> None:
        try:
            self.stage.teardown()
        except Exception:  # noqa: BLE001 - best effort at actor exit
            pass


def _nest(stage: str) -> Callable[[pa.Table], pa.Table]:
    """Upstream table → (song_id, <stage>: struct of its other columns)."""

    def nest(table: pa.Table) -> pa.Table:
        others = [c for c in table.column_names if c != "song_id"]
        struct = pa.StructArray.from_arrays(
            [table[c].combine_chunks() for c in others], names=others
        ) if table.num_rows else pa.array([], pa.struct([table.schema.field(c) for c in others]))
        return pa.table({"song_id": table["song_id"], stage: struct})

    return nest


# ------------------------------------------------------------------ runner


class Runner:
    def __init__(self, config: PipelineConfig, output: str, *, limit: int | None = None,
                 force: bool = False, ray_address: str | None = None,
                 progress: ProgressFn | None = None):
        self.config = config
        self.store = OutputStore(output)
        self.limit = limit
        self.force = force
        self.ray_address = ray_address
        self.progress = progress or (lambda *_: None)
        self.run = RunInfo(run_id=new_run_id(), config_hash=config.content_hash(), code_rev=code_revision())
        self._ray_lock = threading.Lock()
        # What stages share for the whole run (e.g. an LLM server); closed when the run ends.
        self._services = contextlib.ExitStack()

    # ------------------------------------------------------------ top level
    def execute(self, stage_names: list[str], discovery: Discovery | None) -> RunResult:
        result = RunResult(self.run.run_id, self.store.url,
                           ignored_inputs=list(discovery.ignored) if discovery else [])
        started = time.time()
        with self.store.lock():
            self.store.remove_stale_temporaries()
            if self.force:
                for name in stage_names:
                    self.store.clear(name)
            self._save_run(stage_names, discovery, result, started, status="running")
            if self._has_work(stage_names, discovery):
                # Start Ray here, in the main thread (Ray installs its signal handlers there);
                # a rerun with nothing left to do never pays for it.
                init_ray(self.config.run, address=self.ray_address)
                self._check_resources(stage_names)
            try:
                result.stages = self._run_dag(stage_names, discovery)
            finally:
                self._services.close()
                self._save_run(stage_names, discovery, result, started,
                               status="ok" if result.ok else "failed")
        return result

    def close(self) -> None:
        self._services.close()
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
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 3),
            "summary": [asdict(s) for s in result.stages],
        }
        self.store.save_run(self.run.run_id, {
            "config.yaml": self.config.to_yaml(),
            "summary.json": json.dumps(summary, indent=2),
        })

    def _run_dag(self, names: list[str], discovery: Discovery | None) -> list[StageSummary]:
        stages = registry.stages()
        planned = set(names)
        deps = {n: set(stages[n].upstream()) & planned for n in names}
        done: dict[str, StageSummary] = {}
        failed: set[str] = set()
        futures: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            while len(done) < len(names):
                for name in names:
                    if name in done or name in futures.values():
                        continue
                    if deps[name] & failed:
                        done[name] = StageSummary(name, error="not run: an upstream stage failed")
                        failed.add(name)
                    elif deps[name] <= set(done):
                        futures[pool.submit(self._run_stage, stages[name], discovery)] = name
                if not futures:
                    continue
                finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for fut in finished:
                    name = futures.pop(fut)
                    try:
                        done[name] = fut.result()
                    except Exception as exc:  # noqa: BLE001 - reported in the summary, others go on
                        done[name] = StageSummary(name, error=f"{type(exc).__name__}: {exc}")
                        self.progress(name, "failed", done[name])
                    if done[name].error:
                        failed.add(name)
        return [done[n] for n in names]

    # ------------------------------------------------------------ one stage
    def _run_stage(self, stage_cls: type[Stage], discovery: Discovery | None) -> StageSummary:
        if stage_cls.kind == "driver":
            return self._run_driver(stage_cls)
        started = time.time()
        summary = StageSummary(stage_cls.name)
        base, skipped = self._pending_units(stage_cls, discovery)
        summary.skipped = skipped
        summary.rows_in = base.num_rows
        self.progress(stage_cls.name, "start", base.num_rows)
        if base.num_rows:
            self._map(stage_cls, base, summary)
        summary.seconds = round(time.time() - started, 3)
        self.progress(stage_cls.name, "done", summary)
        return summary

    def _run_driver(self, stage_cls: type[Stage]) -> StageSummary:
        """A driver-side stage (export): once, here, with the store, the run's facts and progress."""
        started = time.time()
        summary = StageSummary(stage_cls.name, workers=1)
        stage = stage_cls(stage_cls.settings_from(self.config), self.run)
        outcome = stage.run_driver(DriverContext(self.store, self.run, self.progress))
        summary.rows_in, summary.rows_out = outcome.rows_in, outcome.rows_out
        summary.seconds = round(time.time() - started, 3)
        self.progress(stage_cls.name, "done", summary)
        return summary

    def _pending_units(self, stage_cls: type[Stage], discovery: Discovery | None) -> tuple[pa.Table, int]:
        """Base rows still to do: not in the stage's output, not rejected for good."""
        key = stage_cls.key
        base_stage = stage_cls.requires[0]
        if base_stage == INPUTS:
            sources = list(discovery.sources) if discovery else []
            if self.limit is not None:
                sources = sources[: self.limit]
            base = pa.table({"source": pa.array(sources, pa.string())})
        else:
            for needed in stage_cls.requires:
                if needed != INPUTS and not self.store.has_output(needed):
                    raise RuntimeError(f"stage {stage_cls.name!r} needs the output of {needed!r}, "
                                       f"which {self.store.url} does not have; run --stage {needed} first")
            columns = (stage_cls.columns or {}).get(base_stage)
            base = self.store.read(self.store.stage_dir(base_stage), columns=list(columns) if columns else None)
            if "provenance" in base.column_names:
                base = base.drop_columns(["provenance"])
        done = self.store.keys(self.store.stage_dir(stage_cls.name), key)
        done |= self.store.keys(self.store.rejects_dir(stage_cls.name), "source" if key == "source" else key,
                                where=("retryable", False))
        if done:
            mask = pc.invert(pc.is_in(base[key], value_set=pa.array(sorted(done), pa.string())))
            pending = base.filter(mask)
        else:
            pending = base
        skipped = base.num_rows - pending.num_rows
        if self.limit is not None and base_stage != INPUTS:
            pending = pending.slice(0, self.limit)
        return pending, skipped

    def _join_small_upstream(self, stage_cls: type[Stage], base: pa.Table) -> tuple[pa.Table, list[str]]:
        """Join upstream outputs of modest size here, on the driver (a Ray hash join costs
        seconds of fixed overhead per upstream); return the large ones for Ray to join."""
        large = []
        for up in stage_cls.upstream()[1:]:
            files = self.store.shards(self.store.stage_dir(up))
            if not files:
                continue  # optional upstream not produced yet: the stage sees no such column
            if self.store.count_rows(files) > self.config.run.driver_join_max_rows:
                large.append(up)
                continue
            columns = (stage_cls.columns or {}).get(up)
            table = self.store.read(self.store.stage_dir(up), columns=["song_id", *columns] if columns else None)
            nested = _nest(up)(table)
            position = {sid: i for i, sid in enumerate(nested["song_id"].to_pylist())}
            take = pa.array([position.get(sid) for sid in base["song_id"].to_pylist()], pa.int64())
            base = base.append_column(up, nested[up].take(take))
        return base, large

    def _input_dataset(self, stage_cls: type[Stage], base: pa.Table, batch_size: int):
        import ray.data

        base, large = self._join_small_upstream(stage_cls, base)
        # One block per batch so the actor pool gets work in parallel from the start.
        blocks = [base.slice(i, batch_size) for i in range(0, base.num_rows, batch_size)]
        ds = ray.data.from_arrow(blocks)
        for up in large:
            # Corpus scale: Ray Data's hash join, spread over the cluster.
            files = self.store.shards(self.store.stage_dir(up))
            columns = (stage_cls.columns or {}).get(up)
            right = ray.data.read_parquet([self.store.uri(f) for f in files],
                                          columns=["song_id", *columns] if columns else None,
                                          filesystem=None if self.store.local else self.store.fs)
            right = right.map_batches(_nest(up), batch_format="pyarrow", batch_size=None)
            ds = ds.join(right, join_type="left_outer", num_partitions=max(1, len(blocks)),
                         on=("song_id",))
        return ds, len(blocks)

    def _has_work(self, names: list[str], discovery: Discovery | None) -> bool:
        stages = registry.stages()
        for name in names:
            cls = stages[name]
            if cls.kind == "driver":
                return True
            try:
                pending, _ = self._pending_units(cls, discovery)
            except RuntimeError:
                return True  # its upstream is not there yet: earlier stages will make it
            if pending.num_rows:
                return True
        return False

    def _check_resources(self, names: list[str]) -> None:
        """Every planned stage against the cluster, before any work starts."""
        if not self.config.run.fail_fast_on_resources:
            return
        capacity = cluster_capacity()
        stages = registry.stages()
        for name in names:
            cls = stages[name]
            check_resources(name, cls.resources(cls.settings_from(self.config)), capacity)

    def _ensure_ray(self) -> None:
        with self._ray_lock:
            init_ray(self.config.run, address=self.ray_address)

    def _map(self, stage_cls: type[Stage], base: pa.Table, summary: StageSummary) -> None:
        from ray.data import ActorPoolStrategy

        self._ensure_ray()
        settings = stage_cls.settings_from(self.config)
        res = stage_cls.resources(settings)
        capacity = cluster_capacity()
        ds, n_batches = self._input_dataset(stage_cls, base, res.batch_size)
        workers = pool_size(res, capacity, n_batches)
        summary.workers = workers
        settings = stage_cls.open_services(settings, self._services)
        inflight = InflightLedger.create()
        ds = ds.map_batches(
            StageWorker.bind(stage_cls, settings, self.run, inflight),
            batch_size=res.batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=workers),
            num_cpus=res.cpus,
            num_gpus=res.gpus,
        )
        try:
            self._drain(stage_cls, ds, base, summary)
        finally:
            inflight.close()

    def _drain(self, stage_cls: type[Stage], ds, base: pa.Table, summary: StageSummary) -> None:
        """Stream results to the sinks; anything the stage never answered becomes a reject."""
        run = self.config.run
        out = self.store.writer(self.store.stage_dir(stage_cls.name), arrow_schema(stage_cls.record),
                                self.run.run_id, max_rows=run.shard_max_rows, max_mb=run.shard_max_mb,
                                flush_seconds=run.flush_seconds)
        rej = self.store.writer(self.store.rejects_dir(stage_cls.name), arrow_schema(Reject),
                                self.run.run_id, max_rows=run.shard_max_rows, max_mb=run.shard_max_mb,
                                flush_seconds=run.flush_seconds)
        # A song's record is written once: a second record for the same song_id
        # (identical audio under two names) becomes a `duplicate` reject instead.
        written = self._written_songs(stage_cls)
        answered: set[str] = set()
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                records: list[SongRecord] = []
                rejects: list[Reject] = []
                for key, kind, payload in zip(*(batch[c].to_pylist() for c in ("key", "kind", "payload"))):
                    answered.add(key)
                    if kind == "reject":
                        rejects.append(Reject.model_validate_json(payload))
                        continue
                    rec = stage_cls.record.model_validate_json(payload)
                    first = written.get(rec.song_id)
                    if first is not None:
                        rejects.append(Reject(
                            source=rec.source, song_id=rec.song_id, stage=stage_cls.name, error="duplicate",
                            message=f"same audio as {first} (song_id {rec.song_id[:12]}…): kept once",
                            run_id=self.run.run_id, created_at=utc_now()))
                        continue
                    written[rec.song_id] = rec.source
                    records.append(rec)
                out.write(to_table(records, stage_cls.record))
                rej.write(to_table(rejects, Reject))
                summary.rows_out += len(records)
                summary.rejected += len(rejects)
                self.progress(stage_cls.name, "advance", batch.num_rows)
            lost = [k for k in base[stage_cls.key].to_pylist() if k not in answered]
            if lost:
                rows = base.filter(pc.is_in(base[stage_cls.key], value_set=pa.array(lost, pa.string())))
                rejects = [Reject(source=r.get("source") or "", song_id=r.get("song_id"), stage=stage_cls.name,
                                  error="lost", message="no result came back from the workers",
                                  retryable=True, run_id=self.run.run_id, created_at=utc_now())
                           for r in rows.to_pylist()]
                rej.write(to_table(rejects, Reject))
                summary.rejected += len(rejects)
        finally:
            out.close()
            rej.close()

    def _written_songs(self, stage_cls: type[Stage]) -> dict[str, str]:
        table = self.store.read(self.store.stage_dir(stage_cls.name), columns=["song_id", "source"])
        return dict(zip(table["song_id"].to_pylist(), table["source"].to_pylist()))

