"""MIR back-fill benchmark: CPU cost per tool, speed-up over a naive chain, 1 → 2 worker scaling.

    .venv/bin/python bench/mir.py                  # 4 synthesized songs of ~3.5 min (stereo MP3)
    .venv/bin/python bench/mir.py --format flac
    .venv/bin/python bench/mir.py --songs 2 --minutes 4
    .venv/bin/python bench/mir.py --input my_songs/ --songs 8

Figures (all single-threaded per worker, as the stage runs):
  1. CPU seconds per audio second for the decode and each tool, and in total, with the
     stage's path (one decode per song, one array for every tool, one downbeat RNN).
     Target: beats + key + chords <= 0.05 CPU-s per audio-s.
  2. The same songs through a naive chain: every tool loads the file itself (madmom via
     ffmpeg, essentia's loaders, librosa for Chordino as chord-extractor does), and beats
     and downbeats come from two RNNs. Target: the stage's path >= 1.5x faster.
  3. Wall time for the songs with 1 and with 2 worker processes (each loads the tools
     before the clock starts). Target: >= 1.8x.
The naive chain needs librosa (installed with the `asr` extra, through NeMo).
CPU time is the process's CPU clock plus that of the child processes it waited for
(madmom's ffmpeg decodes), never wall time. On a shared machine the scaling figure
suffers from other load; the CPU figures much less.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test renders: tests/support

import numpy as np
import soundfile as sf

from mfpipe.audio import load_mono
from mfpipe.mir import SAMPLE_RATE, MirAnalyzer
from mfpipe.mir.analysis import single_threaded
from mfpipe.mir.config import MirSettings
from support.render_mir import TEST_SONGS, SongSpec, render

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")


def cpu_now() -> float:
    """CPU seconds of this process and of the children it has waited for (ffmpeg)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# ------------------------------------------------------------------ songs


FORMATS = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "wav": ("WAV", "PCM_16")}


def make_songs(folder: Path, count: int, minutes: float, fmt: str) -> list[Path]:
    paths = []
    for i in range(count):
        base = TEST_SONGS[i % len(TEST_SONGS)]
        bar_s = base.meter * 60.0 / base.bpm
        spec = SongSpec(base.bpm, base.meter, base.key, base.mode, base.progression,
                        bars=math.ceil(minutes * 60.0 / bar_s), seed=100 + i, name=f"bench_{i}_{base.name}")
        paths.append(write_song(folder / f"{spec.name}.{fmt}", render(spec), fmt))
    return paths


def write_song(path: Path, mono: np.ndarray, fmt: str) -> Path:
    # Stereo files, as real songs are: every decode path also pays for the down-mix.
    container, subtype = FORMATS[fmt]
    sf.write(path, np.column_stack((mono, mono)), SAMPLE_RATE, format=container, subtype=subtype)
    return path


def find_songs(folder: Path, count: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    return files[:count]


# ------------------------------------------------------------------ 1. the stage's path


def run_stage_path(analyzer: MirAnalyzer, path: Path) -> tuple[dict[str, float], float]:
    """CPU seconds of the decode and of each tool for one song, and the song's length."""
    started = cpu_now()
    mono = load_mono(str(path), SAMPLE_RATE)
    cost = {"decode": cpu_now() - started}
    facts = analyzer.analyse(mono)
    cost.update(facts.cpu_s)
    return cost, facts.duration_s


# ------------------------------------------------------------------ 2. the naive chain


class NaiveChain:
    """Each tool on its own, loading the file itself; two RNNs for beats and downbeats."""

    def __init__(self) -> None:
        import essentia
        import essentia.standard as es
        import librosa  # noqa: F401 - imported here so its import is not billed to the first song
        from madmom.features.beats import DBNBeatTrackingProcessor, RNNBeatProcessor
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor

        from mfpipe.mir.analysis import ChordRecognizer  # sets VAMP_PATH for the plugin

        essentia.log.infoActive = False
        # Loaders made and dropped per song make the long-lived KeyExtractor log a warning
        # per frame (the stage keeps its algorithms for the worker's life and never sees it).
        essentia.log.warningActive = False
        self.es = es
        self.beat_rnn = RNNBeatProcessor(intra_op_num_threads=1)
        self.beat_dbn = DBNBeatTrackingProcessor(fps=100)
        self.downbeat_rnn = RNNDownBeatProcessor(intra_op_num_threads=1)
        self.downbeat_dbn = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)
        self.key = es.KeyExtractor()
        self.loudness = es.LoudnessEBUR128(sampleRate=SAMPLE_RATE)
        self.chordino = ChordRecognizer(MirSettings().chords)

    def run(self, path: Path) -> dict[str, float]:
        import librosa
        import vamp

        cost = {}
        name = str(path)
        started = cpu_now()
        self.beat_dbn(self.beat_rnn(name))
        cost["beats (own decode, beat RNN)"] = cpu_now() - started
        started = cpu_now()
        self.downbeat_dbn(self.downbeat_rnn(name))
        cost["downbeats (own decode, downbeat RNN)"] = cpu_now() - started
        started = cpu_now()
        self.key(self.es.MonoLoader(filename=name, sampleRate=SAMPLE_RATE)())
        cost["key (MonoLoader)"] = cpu_now() - started
        started = cpu_now()
        stereo, rate, *_ = self.es.AudioLoader(filename=name)()
        self.loudness(stereo)
        cost["loudness (AudioLoader)"] = cpu_now() - started
        started = cpu_now()
        data, rate = librosa.load(name, sr=SAMPLE_RATE, mono=True)
        vamp.collect(data, rate, "nnls-chroma:chordino", parameters=self.chordino.parameters)
        cost["chords (librosa.load)"] = cpu_now() - started
        return cost


def measure(paths: list[Path], warmup: Path, repeat: int, naive: bool) -> tuple[dict, dict, float]:
    """Per-tool CPU seconds summed over the songs, each the minimum over `repeat` runs.

    The two chains alternate song by song, so a burst of other load on the machine
    hits both; the minimum over repeats is the least disturbed run.
    """
    analyzer = MirAnalyzer(MirSettings())
    chain = NaiveChain() if naive else None
    analyzer.analyse(load_mono(str(warmup), SAMPLE_RATE))  # first-call costs are not per-song costs
    if chain:
        chain.run(warmup)
    ours: dict[str, float] = {}
    theirs: dict[str, float] = {}
    audio_s = 0.0
    for path in paths:
        best_ours: dict[str, float] = {}
        best_theirs: dict[str, float] = {}
        for _ in range(repeat):
            cost, seconds = run_stage_path(analyzer, path)
            _keep_min(best_ours, cost)
            if chain:
                _keep_min(best_theirs, chain.run(path))
        audio_s += seconds
        _add(ours, best_ours)
        _add(theirs, best_theirs)
    return ours, theirs, audio_s


def _keep_min(best: dict[str, float], cost: dict[str, float]) -> None:
    for tool, seconds in cost.items():
        best[tool] = min(best.get(tool, float("inf")), seconds)


def _add(total: dict[str, float], cost: dict[str, float]) -> None:
    for tool, seconds in cost.items():
        total[tool] = total.get(tool, 0.0) + seconds


# ------------------------------------------------------------------ 3. scaling


def _worker(queue, ready, start, done) -> None:
    single_threaded()
    analyzer = MirAnalyzer(MirSettings())
    ready.release()
    start.wait()
    started = cpu_now()
    while True:
        path = queue.get()
        if path is None:
            break
        analyzer.analyse(load_mono(path, SAMPLE_RATE))
    done.put(cpu_now() - started)


def wall_with_workers(paths: list[Path], workers: int) -> tuple[float, float]:
    """Wall seconds for all songs with `workers` processes pulling from one queue (set-up
    excluded), and the CPU seconds the workers spent."""
    ctx = mp.get_context("spawn")
    queue, done = ctx.Queue(), ctx.Queue()
    ready, start = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_worker, args=(queue, ready, start, done)) for _ in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    for path in paths:
        queue.put(str(path))
    for _ in procs:
        queue.put(None)
    started = time.perf_counter()
    start.set()
    cpu = sum(done.get() for _ in procs)
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    return elapsed, cpu


# ------------------------------------------------------------------ report


def _rate(seconds: float, audio_s: float) -> str:
    return f"{seconds / audio_s:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=4, help="how many songs (default 4)")
    parser.add_argument("--minutes", type=float, default=3.5, help="length of each synthesized song")
    parser.add_argument("--format", choices=sorted(FORMATS), default="mp3",
                        help="file format of the synthesized songs (default mp3, as most corpora are)")
    parser.add_argument("--input", type=Path, help="use audio files from this folder instead of synthesized songs")
    parser.add_argument("--repeat", type=int, default=2, help="runs per song for the CPU figures (min is kept)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-form", action="store_true", help="skip the form quality figures (section 4)")
    args = parser.parse_args()

    single_threaded()
    with tempfile.TemporaryDirectory() as tmp:
        if args.input:
            paths = find_songs(args.input, args.songs)
            if not paths:
                sys.exit(f"no audio files in {args.input}")
        else:
            paths = make_songs(Path(tmp), args.songs, args.minutes, args.format)
        warmup = write_song(Path(tmp) / f"warmup.{args.format}", render(TEST_SONGS[0])[: 10 * SAMPLE_RATE],
                            args.format)
        print(f"songs: {len(paths)} ({', '.join(p.name for p in paths)}); {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}")

        cost, naive, audio_s = measure(paths, warmup, args.repeat, not args.skip_naive)
        print(f"\n1. the stage's path: {audio_s:.0f} s of audio; CPU-s per audio-s (min of {args.repeat} runs)")
        for tool in ("decode", "beats.rnn", "beats.dbn", "beats", "key", "chords", "loudness", "form"):
            print(f"   {tool:<10} {_rate(cost.get(tool, 0.0), audio_s)}")
        rest = sum(cost.get(t, 0.0) for t in ("decode", "beats", "key", "chords", "loudness"))
        print(f"   form / the rest of MIR: {100 * cost.get('form', 0.0) / rest:.1f} %   (target <= 10 %)")
        core = sum(cost.get(t, 0.0) for t in ("beats", "key", "chords"))
        total = sum(cost.get(t, 0.0) for t in ("decode", "beats", "key", "chords", "loudness", "form"))
        print(f"   beats+key+chords {_rate(core, audio_s)}   (target <= 0.05)")
        print(f"   total (decode + all five tools) {_rate(total, audio_s)}  = {total:.1f} CPU-s")
        print(f"   peak RSS of this process (both chains): "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

        if naive:
            naive_total = sum(naive.values())
            print("\n2. naive chain (each tool loads the file; beat RNN and downbeat RNN): CPU-s per audio-s")
            for tool, seconds in naive.items():
                print(f"   {tool:<38} {_rate(seconds, audio_s)}")
            print(f"   total {_rate(naive_total, audio_s)}  = {naive_total:.1f} CPU-s")
            print(f"   speed-up of the stage's path: {naive_total / total:.2f}x   (target >= 1.5x)")

        if not args.skip_scaling:
            one, cpu_one = wall_with_workers(paths, 1)
            two, cpu_two = wall_with_workers(paths, 2)
            print("\n3. scaling (wall time, tools loaded before the clock starts)")
            print(f"   1 worker: {one:.1f} s   2 workers: {two:.1f} s   speed-up {one / two:.2f}x   (target >= 1.8x)")
            print(f"   cores the workers got: {cpu_one / one:.2f} with 1, {cpu_two / two:.2f} with 2; "
                  f"CPU-s per audio-s {cpu_one / audio_s:.4f} vs {cpu_two / audio_s:.4f}")
            # What the wall-time figure would be with two free cores: the workers' CPU cost per
            # song is what changes when they share caches and memory bandwidth.
            print(f"   with two free cores: 2 x {cpu_one / audio_s:.4f} / {cpu_two / audio_s:.4f} = "
                  f"{2 * cpu_one / cpu_two:.2f}x (projection from the CPU cost per song)")
            print(f"   load average now {os.getloadavg()[0]:.2f} (other work on the machine lowers the wall-time "
                  "speed-up; the cores-got figure shows how much)")


        if not args.skip_form:
            # Quality of the form analysis on renders with a known form, next to the textbook baseline.
            print("\n4. song form on renders with a known form (bench/form.py has the details)")
            import form as form_bench

            sys.argv = [sys.argv[0]]
            form_bench.main()


if __name__ == "__main__":
    main()
