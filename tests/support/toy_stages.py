"""Two small stages used to test the runner itself (DAG order, joins, failures)."""

from __future__ import annotations

import ctypes
import os
import time

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
        time.sleep(float(os.environ.get("TOY_SLOW_S", "0")))  # slow enough to stop or kill mid-stage
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
class NeedStage(Stage):
    """Requires toy_double: a song toy_double rejected never reaches it (and must not stall it)."""

    name = "toy_need"
    record = ReaderRecord
    requires = ("ingest", "toy_double")

    def process_batch(self, rows):
        time.sleep(float(os.environ.get("TOY_SLOW_S", "0")))
        return [ReaderRecord(song_id=r["song_id"], source=r["source"], provenance=self.provenance(),
                             from_upstream=r["toy_double"]["doubled"], duration_s=r["duration_s"]) for r in rows]


@register
class SinkStage(Stage):
    """The end of the toy graph: needs toy_need and toy_reader (so a run of it plans the whole graph)."""

    name = "toy_sink"
    record = ReaderRecord
    requires = ("ingest", "toy_need", "toy_reader")

    def process_batch(self, rows):
        return [ReaderRecord(song_id=r["song_id"], source=r["source"], provenance=self.provenance(),
                             from_upstream=r["toy_need"]["from_upstream"], duration_s=r["duration_s"]) for r in rows]


@register
class CrashStage(Stage):
    """Kills its own worker process with a real segfault (a null read, as a crashing native
    library would) for songs shorter than $TOY_CRASH_BELOW seconds."""

    name = "toy_crash"
    record = DoubledRecord

    def process_batch(self, rows):
        crash_below = float(os.environ.get("TOY_CRASH_BELOW", "0"))
        once = os.environ.get("TOY_CRASH_ONCE_DIR")  # crash only the first time a song is seen
        for r in rows:
            if r["duration_s"] >= crash_below:
                continue
            mark = os.path.join(once, r["song_id"]) if once else None
            if mark and os.path.exists(mark):
                continue
            if mark:
                open(mark, "w").close()
            ctypes.string_at(0)  # faults in this thread, unlike os.kill, which any thread may take
        return [DoubledRecord(song_id=r["song_id"], source=r["source"], provenance=self.provenance(),
                              doubled=2 * r["duration_s"], tags=[]) for r in rows]


class GpuSeenRecord(SongRecord):
    gpu_ids: list[str]
    gpus: float
    started: float
    ended: float
    pid: int


class _GpuStage(Stage):
    """Holds its (fake) GPU share for a moment and records what Ray gave it."""

    columns = {"ingest": ("song_id", "source")}

    def process_batch(self, rows):
        import time

        import ray

        started = time.time()
        time.sleep(float(os.environ.get("TOY_GPU_HOLD_S", "0.5")))
        context = ray.get_runtime_context()
        ids = [str(i) for i in context.get_accelerator_ids().get("GPU", [])]
        gpus = float(context.get_assigned_resources().get("GPU", 0.0))
        return [GpuSeenRecord(song_id=r["song_id"], source=r["source"], provenance=self.provenance(), gpu_ids=ids,
                              gpus=gpus, started=started, ended=time.time(), pid=os.getpid()) for r in rows]


@register
class GpuAStage(_GpuStage):
    name = "toy_gpu_a"
    record = GpuSeenRecord


@register
class GpuBStage(_GpuStage):
    name = "toy_gpu_b"
    record = GpuSeenRecord


@register
class GpuCStage(_GpuStage):
    """Downstream of both: on one GPU it must wait for a phase of its own."""

    name = "toy_gpu_c"
    record = GpuSeenRecord
    requires = ("ingest", "toy_gpu_a", "toy_gpu_b")


@register
class LateStage(Stage):
    """Holds its batch for $TOY_LATE_S seconds, then passes the songs on: a slow upstream."""

    name = "toy_late"
    record = DoubledRecord
    columns = {"ingest": ("song_id", "source", "duration_s")}

    def process_batch(self, rows):
        import time

        time.sleep(float(os.environ.get("TOY_LATE_S", "3")))
        return [DoubledRecord(song_id=r["song_id"], source=r["source"], provenance=self.provenance(),
                              doubled=2 * r["duration_s"], tags=[]) for r in rows]


@register
class GpuLateStage(_GpuStage):
    """A GPU stage behind the slow upstream: it starves, then has work again."""

    name = "toy_gpu_late"
    record = GpuSeenRecord
    requires = ("ingest", "toy_late")


@register
class BothStage(Stage):
    """Downstream of toy_gpu_b and toy_gpu_late: runs them in one run (`--stage toy_both`)."""

    name = "toy_both"
    record = DoubledRecord
    requires = ("ingest", "toy_gpu_b", "toy_gpu_late")
    columns = {"ingest": ("song_id", "source", "duration_s")}

    def process_batch(self, rows):
        return [DoubledRecord(song_id=r["song_id"], source=r["source"], provenance=self.provenance(),
                              doubled=2 * r["duration_s"], tags=[]) for r in rows]
