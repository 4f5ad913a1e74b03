"""Export: the MF-Skills and MF-Think corpora as Parquet shards, with their dataset card.

Not a per-song map: it reads every stage output, joins them by song_id and
writes `OUT/export/` in one go (`mfpipe.curate.export` has the rules for
missing parts and the atomic swap), so it drives itself (`run_stage`) instead
of going through the runner's Ray map. It runs whenever it is planned: a rerun
rewrites the export from whatever the stage outputs hold now.
"""

from __future__ import annotations

import time

from ..curate import export as corpus
from ..pipeline.registry import register
from ..pipeline.stage import Stage
from ..schemas.export import SkillsRow


@register
class ExportStage(Stage):
    name = "export"
    record = SkillsRow
    requires = ("ingest", "synthesize")
    # Optional: joined when present (filter/think decide what is kept; see mfpipe.curate.export).
    uses = ("mir", "caption", "lyrics", "filter", "think")
    summary = "MF-Skills / MF-Think Parquet shards + dataset card (OUT/export, swapped in atomically)"

    @classmethod
    def banner_notes(cls, config) -> list[str]:
        if not config.export.allow_unfiltered:
            return ["refuses to export items the quality filter has not judged"]
        return []

    @classmethod
    def run_stage(cls, runner):
        from ..pipeline.runner import StageSummary

        started = time.time()
        summary = StageSummary(cls.name, workers=1)
        result = corpus.build(runner.store, runner.config, runner.run, runner.progress)
        summary.rows_in = result.manifest["songs"]["synthesized"]
        summary.rows_out = sum(result.rows.values())
        summary.seconds = round(time.time() - started, 3)
        runner.progress(cls.name, "done", summary)
        return summary
