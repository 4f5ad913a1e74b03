"""Two small stages used to test the runner itself (DAG order, joins, failures)."""

from __future__ import annotations

import ctypes
import os

from mfpipe.pipeline.registry import register
from mfpipe.pipeline.stage import Stage
from mfpipe.schemas import SongRecord


class DoubledRecord(SongRecord):
    doubled: float
    tags: list[str]


class ReaderRecord(SongRecord):
    from_upstream: float | None
    duration_s: float


@register
class DoubleStage(Stage):
    """Writes 2 x duration; fails on purpose for songs shorter than $TOY_FAIL_BELOW seconds
    (an environment variable, so the Ray workers a run starts see it too)."""

    name = "toy_double"
    record = DoubledRecord

    def process_batch(self, rows):
        fail_below = float(os.environ.get("TOY_FAIL_BELOW", "0"))
        out = []
        for r in rows:
            if r["duration_s"] < fail_below:
                raise ValueError(f"refusing {r['duration_s']} s")
            out.append(DoubledRecord(song_id=r["song_id"], source=r["source"], provenance=self.provenance(),
                                     doubled=2 * r["duration_s"], tags=["x", "y"]))
        return out


@register
class ReaderStage(Stage):
    """Reads toy_double's output, joined on song_id and nested under row['toy_double']."""

    name = "toy_reader"
    record = ReaderRecord
    uses = ("toy_double",)

    def process_batch(self, rows):
        return [ReaderRecord(song_id=r["song_id"], source=r["source"], provenance=self.provenance(),
                             from_upstream=(r.get("toy_double") or {}).get("doubled"), duration_s=r["duration_s"])
                for r in rows]


@register
class CrashStage(Stage):
    """Kills its own worker process with a real segfault (a null read, as a crashing native
    library would) for songs shorter than $TOY_CRASH_BELOW seconds."""

    name = "toy_crash"
    record = DoubledRecord

    def process_batch(self, rows):
        crash_below = float(os.environ.get("TOY_CRASH_BELOW", "0"))
        if any(r["duration_s"] < crash_below for r in rows):
            ctypes.string_at(0)  # faults in this thread, unlike os.kill, which any thread may take
        return [DoubledRecord(song_id=r["song_id"], source=r["source"], provenance=self.provenance(),
                              doubled=2 * r["duration_s"], tags=[]) for r in rows]
