"""Export: the MF-Skills and MF-Think corpora as Parquet shards, with their dataset card.

Not a per-song map: it reads every stage output, joins them by song_id and
writes `OUT/export/` in one go (`mfpipe.curate.export` has the rules for
missing parts and the atomic swap), so it is a `driver` stage: it runs once per
run on the driver, whenever it is planned, and rewrites the export from
whatever the stage outputs hold now.
"""

from __future__ import annotations

from mfpipe.curate import export as corpus
from mfpipe.curate.export import ExportSettings
from mfpipe.pipeline.registry import register
from mfpipe.pipeline.stage import DriverContext, DriverOutcome, Stage, StageConfig, StageSettings
from mfpipe.schemas.export import SkillsRow


class ExportConfig(ExportSettings, StageConfig):
    """MF-Skills / MF-Think Parquet export, its dataset card, and the AF3 JSON export."""


@register
class ExportStage(Stage):
    name = "export"
    kind = "driver"
    record = SkillsRow
    config_model = ExportConfig
    requires = ("ingest", "synthesize")
    # Optional: joined when present (filter/think decide what is kept; see mfpipe.curate.export).
    uses = ("mir", "caption", "lyrics", "filter", "think")
    summary = "MF-Skills / MF-Think Parquet shards + dataset card (OUT/export, swapped in atomically)"

    @classmethod
    def banner_notes(cls, settings: StageSettings) -> list[str]:
        if not settings.own.allow_unfiltered:
            return ["refuses to export items the quality filter has not judged"]
        return []

    def run_driver(self, ctx: DriverContext) -> DriverOutcome:
        result = corpus.build(ctx.store, self.cfg, ctx.run, ctx.progress)
        return DriverOutcome(rows_in=result.manifest["songs"]["synthesized"], rows_out=sum(result.rows.values()))
