"""Curator tools on a synthetic corpus: export, card, AF3 JSON and report throughput and memory.

    python bench/curator.py --songs 5000

Makes made-up ingest/mir rows and caption/lyrics/synthesize/filter/think outputs with the
real record schemas (tests/support/corpus.py: 11 items and 3 chains per song) in a temporary
folder, then times each curator step in this process and prints its figures. The peak RSS
is the process's, so it includes the fixture (a separate `--step` run measures one step
alone).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from mfpipe.curate import af3, report  # noqa: E402
from mfpipe.curate import export as corpus  # noqa: E402
from mfpipe.pipeline.config import load_config  # noqa: E402
from mfpipe.pipeline.stage import RunInfo  # noqa: E402
from mfpipe.store import OutputStore  # noqa: E402
from support.corpus import Plan, fake_songs, write_llm_stages  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=2000)
    parser.add_argument("--step", choices=["all", "export", "af3", "report"], default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        t = time.perf_counter()
        fake_songs(out, args.songs)
        write_llm_stages(out, Plan(unjudged=max(1, args.songs // 20), stale=max(1, args.songs // 50)))
        print(f"fixture: {args.songs} songs in {time.perf_counter() - t:.1f} s (not part of the figures)")
        base = peak_mb()
        store = OutputStore(out)
        cfg = load_config(None, ["profile=cpu"])
        figures = {"songs": args.songs, "rss_before_mb": round(base)}
        if args.step in ("all", "export"):
            t = time.perf_counter()
            result = corpus.build(store, cfg.export, RunInfo(run_id="20990101T000000-bench", config_hash="bench"))
            seconds = time.perf_counter() - t
            rows = sum(result.rows.values())
            size = sum(f.stat().st_size for f in (out / "export").rglob("*.parquet"))
            figures.update(export_s=round(seconds, 2), export_rows=rows, export_rows_per_s=round(rows / seconds),
                           export_songs_per_s=round(args.songs / seconds), export_parquet_mb=round(size / 2**20, 1),
                           rss_after_export_mb=round(peak_mb()))
        if args.step in ("all", "af3") and corpus.current_root(store):
            t = time.perf_counter()
            written = af3.write(store, corpus.current_root(store))
            figures.update(af3_s=round(time.perf_counter() - t, 2),
                           af3_entries=sum(w["entries"] for table, w in written.items() if table != "audio"),
                           rss_after_af3_mb=round(peak_mb()))
        if args.step in ("all", "report"):
            t = time.perf_counter()
            path = report.write_report(str(out))
            figures.update(report_s=round(time.perf_counter() - t, 2),
                           report_kb=round(Path(path).stat().st_size / 1024), rss_after_report_mb=round(peak_mb()))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
