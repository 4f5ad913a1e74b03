"""Elastic pools: `mfpipe run --stage mir` on N one-minute songs, streamed and barrier, against the naive
chain, start-up included on every side.

    .venv/bin/python bench/pools.py                  # 8 songs of 1 minute, 3 runs each
    .venv/bin/python bench/pools.py --songs 8 --repeat 5 --format flac

What it times (whole processes, wall clock, start-up included):
- the naive chain: one process that imports the MIR tools and runs each tool on each song, every tool
  loading the file itself (bench/mir.py's `NaiveChain`), one song after the other;
- `mfpipe run --stage mir` with `run.schedule=stream` (the default: ingest and mir start together, and
  mir's pool grows into ingest's share once ingest is done) and with `run.schedule=barrier`;
each on a fresh output folder, `--repeat` times, printing the minimum and the median of each and the
ratios. Targets: stream >= 1.5x the naive chain (2 cores), stream no slower than barrier.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))  # the test renders: tests/support

from mir import make_songs  # noqa: E402 (bench/mir.py: the songs and the naive chain)

NAIVE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from mir import NaiveChain
from mfpipe.mir.analysis import single_threaded
single_threaded()
chain = NaiveChain()
for path in sys.argv[2:]:
    chain.run(path)
"""


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:6])} ... failed:\n{proc.stderr[-3000:]}")
    return seconds


def run_mir(songs: Path, out: Path, schedule: str) -> float:
    return timed([sys.executable, "-m", "mfpipe.pipeline.cli", "run", "--stage", "mir", "--profile", "cpu",
                  "--input", str(songs), "--output", str(out), "--set", f"run.schedule={schedule}",
                  "--set", "ingest.near_duplicates.enabled=false"], env={"MFPIPE_PROGRESS": "0"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--format", default="mp3", choices=("mp3", "flac", "wav"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        songs = Path(tmp) / "songs"
        songs.mkdir()
        paths = make_songs(songs, args.songs, args.minutes, args.format)
        print(f"{len(paths)} songs of {args.minutes:g} min ({args.format}); {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f}; {args.repeat} runs each, start-up included", flush=True)
        times: dict[str, list[float]] = {"naive": [], "stream": [], "barrier": []}
        for i in range(args.repeat):
            times["naive"].append(timed([sys.executable, "-c", NAIVE, str(REPO / "bench"), *map(str, paths)]))
            for schedule in ("stream", "barrier"):
                times[schedule].append(run_mir(songs, Path(tmp) / f"out-{schedule}-{i}", schedule))
            print(f"  run {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    for k in times:
        print(f"{k:<8} min {best[k]:6.1f} s   median {median[k]:6.1f} s")
    print(f"stream vs naive chain: {median['naive'] / median['stream']:.2f}x (median), "
          f"{best['naive'] / best['stream']:.2f}x (best)   (target >= 1.5x)")
    print(f"stream vs barrier: {median['barrier'] / median['stream']:.2f}x (median)   (target >= 1.0x)")


if __name__ == "__main__":
    main()
