"""Training exports with the audio inside: throughput and peak memory, at N songs and at 2N.

    python bench/export_audio.py --songs 16 --seconds 90 --formats webdataset hf-audio lhotse-shar

Renders N distinct songs (44.1 kHz stereo FLAC, `--seconds` long) into a temporary corpus, writes their
ingest rows and the LLM-made stage outputs with the real record schemas (`tests/support/corpus.py`: 11
items and 3 chains per song), builds the Parquet export, then runs each training format in a fresh
process (decode once per song → 16 kHz mono → FLAC; `--audio`, `--workers` as given) and prints, per
format and corpus size: songs/s, audio seconds per wall second, MB/s written, the process's RSS after the
first shard, half-way and at the end, and its peak RSS.
Then the corpus is doubled (N more songs) and everything runs again: the peak must stay flat, since an
export holds one bucket of text rows, one song's audio per worker and one shard's row-group buffer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import pyarrow.parquet as pq  # noqa: E402

from mfpipe.curate import export as corpus  # noqa: E402
from mfpipe.pipeline.config import load_config  # noqa: E402
from mfpipe.pipeline.stage import RunInfo  # noqa: E402
from mfpipe.schemas import IngestRecord, to_table  # noqa: E402
from mfpipe.store import OutputStore  # noqa: E402
from support.corpus import Plan, prov, write_llm_stages  # noqa: E402
from support.helpers import tone_song  # noqa: E402


def add_songs(out: Path, songs: Path, start: int, count: int, seconds: float) -> None:
    """Render songs start..start+count-1 and add their ingest rows (one shard per call)."""
    rows = []
    for i in range(start, start + count):
        path = tone_song(songs / f"song-{i:05d}.flac", seconds, sr=44100, channels=2, seed=i, base_hz=110 + i)
        rows.append(IngestRecord(song_id=hashlib.sha256(path.read_bytes()).hexdigest(), source=str(path),
                                 provenance=prov("ingest"), duration_s=seconds, processed_s=seconds, truncated=False,
                                 sample_rate=44100, channels=2, n_windows=int(-(-seconds // 30)), format="FLAC",
                                 size_bytes=path.stat().st_size, peak_dbfs=-10.0, decoder="soundfile"))
    (out / "ingest").mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(rows, IngestRecord), out / "ingest" / f"part-bench-{start:05d}.parquet")


def child(out: str, fmt: str, sets: list[str]) -> None:
    """One export in this process; prints its figures as JSON."""
    import importlib

    from mfpipe.curate.audio_export import export_audio

    # The format's library is imported first: its import (torch, for webdataset and lhotse) is not export time.
    importlib.import_module({"webdataset": "webdataset", "lhotse-shar": "lhotse", "hf-audio": "pyarrow"}[fmt])
    import psutil

    store = OutputStore(out)
    cfg = load_config(None, ["profile=cpu", *sets])
    me, rss = psutil.Process(), []

    def committed(event: str, seq: int) -> None:
        if event == "committed":
            rss.append(me.memory_info().rss / 2**20)

    t = time.perf_counter()
    result = export_audio(store, corpus.current_root(store), fmt, cfg.export, restart=True, on_event=committed)
    seconds = time.perf_counter() - t
    m = result.manifest
    print(json.dumps({"format": fmt, "songs": m["songs"], "samples": m["samples"], "seconds": round(seconds, 2),
                      "songs_per_s": round(m["songs"] / seconds, 2),
                      "audio_s_per_s": round(m["audio_hours"] * 3600 / seconds, 1),
                      "mb_written": round(m["bytes"] / 2**20, 1), "mb_per_s": round(m["bytes"] / 2**20 / seconds, 2),
                      "shards": m["shards"], "rss_after_first_shard_mb": round(rss[0]),
                      "rss_at_half_mb": round(rss[len(rss) // 2]), "rss_at_end_mb": round(rss[-1]),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def run_child(out: Path, fmt: str, sets: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(out), fmt, *sets], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=16, help="N: the first corpus size (then 2N)")
    parser.add_argument("--seconds", type=float, default=90.0, help="length of each song")
    parser.add_argument("--formats", nargs="+", default=["webdataset", "hf-audio", "lhotse-shar"])
    parser.add_argument("--audio", choices=["full", "windows"], default="full")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-mb", type=float, default=4.0, help="export.audio_shard_max_mb (small: many shards, "
                                                                      "so the RSS is sampled often)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2:])
        return
    sets = [f"export.audio={args.audio}", f"export.audio_workers={args.workers}",
            f"export.audio_shard_max_mb={args.shard_mb}"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out, songs = Path(tmp) / "out", Path(tmp) / "songs"
        for n, start in ((args.songs, 0), (2 * args.songs, args.songs)):
            t = time.perf_counter()
            add_songs(out, songs, start, n - start, args.seconds)
            write_llm_stages(out, Plan(unjudged=0, stale=0))
            cfg = load_config(None, ["profile=cpu"])
            corpus.build(OutputStore(out), cfg.export, RunInfo(run_id=f"20990101T00000{n % 10}-bench",
                                                               config_hash="bench"))
            print(f"corpus: {n} songs of {args.seconds:g} s in {time.perf_counter() - t:.1f} s (not measured)",
                  file=sys.stderr)
            for fmt in args.formats:
                figures = run_child(out, fmt, sets)
                print(json.dumps(figures), file=sys.stderr)
                results.append(figures)
    print(json.dumps({"audio": args.audio, "workers": args.workers, "seconds_per_song": args.seconds,
                      "runs": results}, indent=1))
    for fmt in args.formats:
        small, big = [r for r in results if r["format"] == fmt]
        print(f"{fmt}: peak RSS {small['peak_rss_mb']} MB at {small['songs']} songs, {big['peak_rss_mb']} MB at "
              f"{big['songs']} songs ({big['peak_rss_mb'] / small['peak_rss_mb']:.2f}x)")


if __name__ == "__main__":
    main()
