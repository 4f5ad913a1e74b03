"""A stage from another distribution: found through the `mfpipe.stages` entry point, with its own section.

The plugin test puts this folder and a dist-info that declares the entry point on PYTHONPATH; nothing in
mfpipe names it. Its worker records what Ray gave it, so the test sees its resources take effect.
"""

from __future__ import annotations

from pydantic import Field

from mfpipe.pipeline.stage import Resources, Stage, StageConfig
from mfpipe.schemas import SongRecord


class ScaledRecord(SongRecord):
    scaled: float
    worker_cpus: float


class ScaleConfig(StageConfig):
    """A plugin's section: its own parameter and its resources."""

    resources: Resources = Field(default_factory=lambda: Resources(cpus=0.5, batch_size=2),
                                 description="What each worker asks Ray for.")
    factor: float = Field(2.0, description="What the song's duration is multiplied by.")


class ScaleStage(Stage):
    name = "toy_scale"
    record = ScaledRecord
    config_model = ScaleConfig
    columns = {"ingest": ("song_id", "source", "duration_s")}
    summary = "a plugin stage: duration x factor"

    def process_batch(self, rows):
        import ray

        cpus = float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))
        return [ScaledRecord(song_id=r["song_id"], source=r["source"], provenance=self.provenance(),
                             scaled=r["duration_s"] * self.cfg.factor, worker_cpus=cpus) for r in rows]
