"""What a song costs, from the runs' own cost rows (`OUT/_costs/<stage>/`, one row per song, stage and run),
and what a corpus would cost.

`cost_table(store)` reads them; `stage_costs(table)` gives per stage the totals and the per-song medians
(wall, CPU, GPU share x wall, tokens in/out, model loads); `project(costs, songs=, gpus=, cpus=)` turns the
per-song means of a finished run into a corpus' wall time and GPU-hours on a given cluster, and names the
stage that bounds it. A projection is arithmetic on measured costs: it assumes the corpus' songs cost what
the measured ones did (their length matters: the per-song costs are given with the audio seconds they
covered) and that stages overlap as a streamed run lets them (the cluster's busiest resource bounds the
wall time). The LLM server's own GPU time is not in the stage rows (the stages only send it tokens): it
is projected from the tokens when a throughput is given.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..store import COSTS

COLUMNS = ["song_id", "stage", "run_id", "wall_s", "cpu_s", "gpu_s", "gpus", "tokens_in", "tokens_out",
           "model_load_s"]


def cost_table(store, run_id: str | None = None) -> pa.Table:
    """Every cost row of the output folder (or of one run)."""
    base = store.join(COSTS)
    try:
        stages = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(base, detail=False))
    except FileNotFoundError:
        stages = []
    tables = [store.read_columns(store.join(COSTS, stage), COLUMNS) for stage in stages]
    table = pa.concat_tables([t for t in tables if t.num_rows], promote_options="default") if tables else None
    if table is None or table.num_rows == 0:
        return pa.table({c: pa.array([], pa.float64() if c.endswith("_s") or c == "gpus" else pa.string())
                         for c in COLUMNS})
    if run_id is not None:
        table = table.filter(pc.equal(table["run_id"], run_id))
    return table


@dataclass
class StageCost:
    stage: str
    songs: int
    totals: dict[str, float] = field(default_factory=dict)  # wall_s, cpu_s, gpu_s, tokens_in, tokens_out, ...
    median: dict[str, float] = field(default_factory=dict)  # per song
    mean: dict[str, float] = field(default_factory=dict)  # per song (what projections multiply)
    gpus: float = 0.0  # the workers' GPU share


MEASURES = ("wall_s", "cpu_s", "gpu_s", "tokens_in", "tokens_out", "model_load_s")


def stage_costs(table: pa.Table) -> dict[str, StageCost]:
    """Per stage: totals, per-song medians and means (a song done twice counts twice: both were paid)."""
    out: dict[str, StageCost] = {}
    rows = table.to_pylist()
    for stage in dict.fromkeys(r["stage"] for r in rows):
        mine = [r for r in rows if r["stage"] == stage]
        cost = StageCost(stage, len({r["song_id"] for r in mine}), gpus=max((r["gpus"] or 0.0) for r in mine))
        for m in MEASURES:
            values = [float(r[m] or 0.0) for r in mine]
            cost.totals[m] = round(sum(values), 3)
            cost.median[m] = round(statistics.median(values), 4)
            cost.mean[m] = round(sum(values) / len(values), 4)
        out[stage] = cost
    return out


def summary(table: pa.Table) -> dict[str, Any]:
    """For a run's summary.json and the dataset card."""
    return {stage: asdict(c) for stage, c in stage_costs(table).items()}


@dataclass
class Projection:
    songs: int
    cpus: float
    gpus: float
    stages: list[dict[str, Any]]  # per stage: CPU-hours, GPU-hours, tokens, its wall time alone on the cluster
    cpu_hours: float
    gpu_hours: float
    llm_gpu_hours: float | None
    wall_hours: float  # the cluster's busiest resource, with every stage overlapping as a streamed run does
    bound_by: str  # the resource and the stage that bound it
    notes: list[str] = field(default_factory=list)


def project(costs: dict[str, StageCost], *, songs: int, gpus: float, cpus: float,
            llm_tokens_per_gpu_s: float | None = None) -> Projection:
    """A corpus of `songs` songs on `cpus` CPUs and `gpus` GPUs, from measured per-song means."""
    stages, notes = [], []
    cpu_total = gpu_total = 0.0
    tokens = 0.0
    for c in costs.values():
        cpu_s, gpu_s = c.mean["cpu_s"] * songs, c.mean["gpu_s"] * songs
        stage_tokens = (c.mean["tokens_in"] + c.mean["tokens_out"]) * songs
        alone = max(cpu_s / cpus if cpus else 0.0, gpu_s / gpus if gpus else (float("inf") if gpu_s else 0.0))
        stages.append({"stage": c.stage, "cpu_hours": round(cpu_s / 3600, 2), "gpu_hours": round(gpu_s / 3600, 2),
                       "tokens": int(stage_tokens), "alone_hours": round(alone / 3600, 2)})
        cpu_total, gpu_total, tokens = cpu_total + cpu_s, gpu_total + gpu_s, tokens + stage_tokens
    llm_gpu_s = tokens / llm_tokens_per_gpu_s if llm_tokens_per_gpu_s and tokens else None
    if tokens and llm_gpu_s is None:
        notes.append(f"the LLM server's GPU time is not projected: {tokens:,.0f} tokens; give its throughput "
                     "(--llm-tokens-per-gpu-s, tokens per GPU-second) to count it")
    if not gpu_total:
        notes.append("the measured run used no GPU (e.g. the cpu profile): its stages' GPU time is not known; "
                     "project from a run on GPUs")
    gpu_demand = gpu_total + (llm_gpu_s or 0.0)
    by_cpu = cpu_total / cpus if cpus else 0.0
    by_gpu = gpu_demand / gpus if gpus else (float("inf") if gpu_demand else 0.0)
    resource, key = ("GPUs", "gpu_hours") if by_gpu >= by_cpu else ("CPUs", "cpu_hours")
    top = max(stages, key=lambda s: s[key]) if stages else {"stage": "-"}
    return Projection(songs, cpus, gpus, stages, round(cpu_total / 3600, 2), round(gpu_total / 3600, 2),
                      round(llm_gpu_s / 3600, 2) if llm_gpu_s is not None else None,
                      round(max(by_cpu, by_gpu) / 3600, 2), f"{resource}: {top['stage']}", notes)
