"""`mfpipe review` on a synthetic corpus: index build, pages, decisions, and what decisions cost the export.

    python bench/review.py --songs 2000 --decisions 1000

Makes made-up ingest/mir rows and caption/lyrics/synthesize/filter/think outputs with the real record
schemas (tests/support/corpus.py: 11 items and 3 chains per song) in a temporary folder, then, in this
process: builds the app's song index, renders the song list (all songs; a text search) and a song's page
through the real app (in-process ASGI client, no network), commits decisions one by one, reads them back
from a fresh store, and times the export without and with them. Prints its figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fastapi.testclient import TestClient  # noqa: E402

from mfpipe.curate import export as corpus  # noqa: E402
from mfpipe.pipeline.config import load_config  # noqa: E402
from mfpipe.review.app import create_app  # noqa: E402
from mfpipe.review.corpus import CorpusIndex  # noqa: E402
from mfpipe.review.decisions import DecisionStore, new_decision  # noqa: E402
from mfpipe.review.items import synthesize_items  # noqa: E402
from mfpipe.schemas import RunInfo  # noqa: E402
from mfpipe.store import OutputStore  # noqa: E402
from support.corpus import Plan, fake_songs, write_llm_stages  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=2000)
    parser.add_argument("--decisions", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        fake_songs(out, args.songs)
        write_llm_stages(out, Plan(unjudged=max(1, args.songs // 20), stale=max(1, args.songs // 50)))
        store = OutputStore(out)
        figures: dict[str, object] = {"songs": args.songs, "rss_before_mb": round(peak_mb())}

        seconds, index = timed(lambda: CorpusIndex(store).refresh())
        figures.update(index_s=round(seconds, 2), index_items=sum(len(s.items) for s in index.songs.values()),
                       rss_after_index_mb=round(peak_mb()))
        seconds, _ = timed(index.refresh, 5)
        figures["index_unchanged_check_s"] = round(seconds, 3)

        client = TestClient(create_app(str(out), "bench"), base_url="http://127.0.0.1")
        with client:
            client.get("/")  # builds the app's own index
            seconds, page = timed(lambda: client.get("/"), 3)
            figures.update(list_page_s=round(seconds, 3), list_page_kb=round(len(page.content) / 1024))
            seconds, _ = timed(lambda: client.get("/", params={"q": "harmony", "flag": "any"}), 3)
            figures["search_page_s"] = round(seconds, 3)
            song = next(s for s in index.songs.values() if s.items)
            seconds, page = timed(lambda: client.get(f"/song/{song.song_id}"), 5)
            assert page.status_code == 200
            figures.update(song_page_s=round(seconds, 3), song_page_kb=round(len(page.content) / 1024))

        cfg = load_config(None, ["profile=cpu"])
        seconds, _ = timed(lambda: corpus.build(store, cfg.export, RunInfo(run_id="20990101T000000-a",
                                                                         config_hash="bench")))
        figures["export_without_decisions_s"] = round(seconds, 2)

        import pyarrow.parquet as pq

        synth = pq.read_table(sorted((out / "synthesize").glob("*.parquet"))).to_pylist()
        rng = random.Random(0)
        items = [i for row in rng.sample(synth, min(len(synth), args.decisions)) for i in synthesize_items(row)]
        decisions = DecisionStore(store)
        chosen = rng.sample(items, min(len(items), args.decisions))
        t = time.perf_counter()
        for item in chosen:
            decisions.record(new_decision(rng.choice(["ana", "ben"]), item, rng.choice(["keep", "drop", "keep"])))
        figures.update(decisions=len(chosen), decision_commit_ms=round(1000 * (time.perf_counter() - t) / len(chosen),
                                                                        2))
        seconds, loaded = timed(lambda: DecisionStore(OutputStore(out)).load())
        figures.update(decisions_load_s=round(seconds, 2), decisions_loaded=len(loaded))
        seconds, result = timed(lambda: corpus.build(store, cfg.export, RunInfo(run_id="20990101T000000-b",
                                                                              config_hash="bench")))
        figures.update(export_with_decisions_s=round(seconds, 2),
                       agreement_items=(result.manifest["reviews"]["agreement"] or {}).get("reviewed_items"),
                       rss_end_mb=round(peak_mb()))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
