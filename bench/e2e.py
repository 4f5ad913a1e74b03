"""End-to-end benchmark: songs/hour, how busy the cores were, and peak memory, at several N.

Runs the real `mfpipe run` (its own local Ray) on N distinct variants of the
bundled examples (each variant has different bytes: plain copies would be
deduplicated into one song; the variants are near-duplicates of one another, so
near-duplicate grouping is turned off here) and watches the whole process tree
(driver, Ray workers, raylet) while it runs.

    .venv/bin/python bench/e2e.py                      # ingest, N = 10 and 100
    .venv/bin/python bench/e2e.py --stage mir --n 10 --n 40

Streaming means the peak memory must not grow with N.

    .venv/bin/python bench/e2e.py --compare --n 20     # --stage all, streamed vs barrier

`--compare` runs `--stage all` (cpu profile) on the same N songs twice, once with
`run.schedule=stream` and once with `run.schedule=barrier`, and prints for each the
time to the first committed think row, the total wall time, and each stage's busy
time (the seconds its workers spent on batches) and span. Targets: the streamed run's
first think row before 30 % of the barrier run's wall; its total wall no worse.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf


def make_variants(n: int, folder: Path) -> list[Path]:
    """Variant i = example (i mod 4) with its own gain and a few ms of lead-in."""
    examples = sorted(p for p in Path(str(resources.files("mfpipe.examples"))).iterdir()
                      if p.suffix in (".flac", ".mp3", ".ogg", ".wav"))
    decoded = [sf.read(p, dtype="float32") for p in examples]
    out = []
    for i in range(n):
        audio, rate = decoded[i % len(decoded)]
        lead = np.zeros((1 + i) * rate // 1000, dtype=np.float32)
        variant = np.concatenate([lead, audio * (1.0 - 0.002 * (i // len(decoded)))])
        path = folder / f"variant_{i:04d}.flac"
        sf.write(path, variant, rate)
        out.append(path)
    return out


class TreeMonitor(threading.Thread):
    """Samples CPU time and PSS of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.cpu: dict[int, float] = {}  # last CPU seconds seen per pid (dead ones keep theirs)
        self.peak_bytes = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for p in procs:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        self.cpu[p.pid] = t.user + t.system
                        mem = p.memory_full_info()
                        total += getattr(mem, "pss", mem.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            self.stop.wait(self.interval)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def bench_once(n: int, stage: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="mfpipe-bench-") as tmp:
        songs = Path(tmp) / "songs"
        songs.mkdir()
        paths = make_variants(n, songs)
        audio_s = sum(sf.info(p).duration for p in paths)
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "mfpipe.pipeline.cli", "run", "--stage", stage, "--input", str(songs),
               "--output", str(out), *extra]
        started = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        monitor = TreeMonitor(proc.pid)
        monitor.start()
        _, err = proc.communicate()
        wall = time.time() - started
        monitor.stop.set()
        monitor.join()
        if proc.returncode != 0:
            raise SystemExit(f"run failed:\n{err[-3000:]}")
        summary = json.loads(next((out / "_runs").glob("*/summary.json")).read_text())
        stage_s = sum(s["seconds"] for s in summary["summary"])
        stages = {s["stage"]: s for s in summary["summary"]}
        cores = psutil.cpu_count()
        return {
            "n": n,
            "audio_min": round(audio_s / 60, 1),
            "wall_s": round(wall, 1),
            "stage_s": round(stage_s, 1),
            "songs_per_hour": round(n / wall * 3600),
            "songs_per_hour_in_stages": round(n / stage_s * 3600) if stage_s else None,
            "cores_busy": round(monitor.cpu_seconds / (wall * cores), 3),
            "peak_mem_mb": round(monitor.peak_bytes / 2**20),
            "rows": {s["stage"]: [s["rows_out"], s["rejected"]] for s in summary["summary"]},
            "first_think_s": (stages.get("think") or {}).get("first_commit_s"),
            "busy": {name: (round(s.get("busy_seconds") or 0.0, 1), s["seconds"]) for name, s in stages.items()},
        }


def compare(n: int, extra: list[str]) -> None:
    """--stage all, streamed and under the barrier schedule, on the same songs."""
    runs = {mode: bench_once(n, "all", ["--profile", "cpu", "--set", f"run.schedule={mode}", *extra])
            for mode in ("stream", "barrier")}
    stream, barrier = runs["stream"], runs["barrier"]
    print(f"--stage all on {n} songs ({stream['audio_min']} min of audio), cpu profile")
    print(f"{'schedule':>8} {'first think row s':>18} {'wall s':>7} {'peak MB':>8}")
    for mode, r in runs.items():
        print(f"{mode:>8} {r['first_think_s'] or '-':>18} {r['wall_s']:>7} {r['peak_mem_mb']:>8}")
    if stream["first_think_s"] and barrier["wall_s"]:
        print(f"first think row at {100 * stream['first_think_s'] / barrier['wall_s']:.0f} % of the barrier run's "
              f"wall (target < 30 %); total wall {stream['wall_s'] / barrier['wall_s']:.2f}x the barrier's "
              f"(target <= 1)")
    print("busy s (workers on batches) / span s (stage start to end), per stage:")
    for name in stream["busy"]:
        (sb, ss), (bb, bs) = stream["busy"][name], barrier["busy"].get(name, (0, 0))
        print(f"   {name:<11} stream {sb:>7} / {ss:>7}   barrier {bb:>7} / {bs:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, action="append", help="number of songs (repeatable; default 10 and 100)")
    parser.add_argument("--stage", default="ingest")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    parser.add_argument("--compare", action="store_true", help="--stage all: streamed vs barrier schedule")
    args = parser.parse_args()
    # The variants are one recording each, 2 ms apart: grouped, they would be 4 songs, not N.
    sets = ["ingest.near_duplicates.enabled=false", *args.sets]
    extra = [x for kv in sets for x in ("--set", kv)]
    if args.compare:
        compare((args.n or [20])[0], extra)
        return
    print(f"cores: {psutil.cpu_count()}, load before: {os.getloadavg()[0]:.2f}, stage: {args.stage}")
    header = f"{'N':>5} {'audio min':>9} {'wall s':>7} {'stage s':>7} {'songs/h':>8} {'songs/h*':>8} " \
             f"{'cores busy':>10} {'peak MB':>8}"
    print(header)
    for n in args.n or [10, 100]:
        r = bench_once(n, args.stage, extra)
        print(f"{r['n']:>5} {r['audio_min']:>9} {r['wall_s']:>7} {r['stage_s']:>7} {r['songs_per_hour']:>8} "
              f"{r['songs_per_hour_in_stages']:>8} {r['cores_busy']:>10.0%} {r['peak_mem_mb']:>8}", flush=True)
        print(f"      rows (out, rejected) per stage: {r['rows']}")
    print("songs/h counts the whole command (Ray start included); songs/h* only the stages' own time.")


if __name__ == "__main__":
    main()
