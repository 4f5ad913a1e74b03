"""What songs cost: one row per song, stage and run, written by the run (`OUT/_costs/<stage>/`)."""

from __future__ import annotations

from .common import Record


class SongCost(Record):
    """One song's share of what one stage spent on it in one run.

    A batch's costs are split evenly over its songs; a worker's model load is billed to the first batch
    it runs. Summed over a stage's rows they give the stage's totals: `wall_s` its workers' busy time,
    `gpu_s` their GPU share times that time, `cpu_s` their processes' CPU time."""

    song_id: str | None = None
    source: str
    stage: str
    run_id: str
    wall_s: float  # wall time on the worker
    cpu_s: float  # CPU time of the worker's process (all its threads)
    gpu_s: float  # GPU share x wall time: GPU-seconds
    gpus: float  # the worker's GPU share
    tokens_in: int = 0  # LLM prompt tokens (the record's usage)
    tokens_out: int = 0  # LLM completion tokens, reasoning included
    model_load_s: float = 0.0
