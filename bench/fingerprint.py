"""Fingerprint benchmark: Chromaprint's cost per audio second, and near-duplicate grouping at 10k songs.

    .venv/bin/python bench/fingerprint.py                       # 6 rendered songs of 60 s; 10k songs
    .venv/bin/python bench/fingerprint.py --songs 10000 --pairs 50 --clips 1000

Figures:
  1. CPU seconds per audio second of ingest's decode alone (`audio.scan_audio`), of the decode with
     Chromaprint fed from it (what ingest does now), and of `fpcalc -raw` (a process per file, its own
     decode) on the same files (FLAC, 44.1 kHz stereo, rendered with `tests/support/render_mir.py`).
  2. Grouping N songs one at a time, as ingest's gate decides them (`mfpipe.dedup.NearDuplicates`,
     the inverted index): seconds in all and per 1000 songs, the index's size, and whether the planted
     copies were found and nothing else grouped. The N fingerprints are synthetic, made from the
     rendered ones (`tests/support/fingerprint_synth.py`): an unrelated song is 4 rendered fingerprints in a
     row, each XOR-ed with a random mask of its own (~4 min, Chromaprint's structure kept, ~half the
     bits different from any other song); 20 % are copies of earlier songs with 3 % of their bits
     flipped and up to 3 s cut off. The all-pairs reference (every kept song, every offset) runs on
     the first K songs and is extrapolated to N by (N/K)^2.
  3. Screening the N songs against M evaluation clips of 10 s (`mfpipe.dedup.ClipScreen`, 4 grid
     phases each): half cut from the songs (with bit errors), half from unrelated ones.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test renders: tests/support

import numpy as np
import soundfile as sf

from mfpipe import audio
from mfpipe.dedup import Clip, ClipMatchSettings, ClipScreen, NearDuplicates, NearDuplicateSettings, Song
from mfpipe.fingerprint import ITEM_S, FingerprintSink, fingerprint_source
from support.fingerprint_synth import copy, corpus
from support.render_mir import TEST_SONGS, SongSpec, render


def cpu_now() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def make_songs(folder: Path, count: int, seconds: float) -> list[Path]:
    paths = []
    for i in range(count):
        spec = TEST_SONGS[i % len(TEST_SONGS)]
        spec = SongSpec(spec.bpm, spec.meter, spec.key, spec.mode, spec.progression,
                        bars=max(1, int(seconds / spec.bar_s)), seed=100 + i, name=f"{spec.name}_{i}")
        mono = render(spec, 44100)
        stereo = np.stack([mono, 0.9 * mono], axis=1)
        path = folder / f"{spec.name}.flac"
        sf.write(path, stereo, 44100, subtype="PCM_16")
        paths.append(path)
    return paths


def timed(fn, paths: list[Path]) -> float:
    start = cpu_now()
    for path in paths:
        fn(path)
    return cpu_now() - start


def fingerprint_cost(paths: list[Path]) -> list[np.ndarray]:
    audio_s = sum(sf.info(p).duration for p in paths)
    decode = timed(lambda p: audio.scan_audio(str(p)), paths)
    with_fp = timed(lambda p: audio.scan_audio(str(p), sink=FingerprintSink(max_seconds=1200.0)), paths)
    print(f"1. fingerprints of {len(paths)} songs, {audio_s:.0f} s of audio (CPU-s per audio-s)")
    print(f"   ingest decode alone           {decode / audio_s:.5f}")
    print(f"   decode + Chromaprint (ingest) {with_fp / audio_s:.5f}   Chromaprint itself: "
          f"{(with_fp - decode) / audio_s:.5f} ({(with_fp - decode) / audio_s * 3600:.1f} CPU-s per audio hour)")
    if shutil.which("fpcalc"):
        fpcalc = timed(lambda p: subprocess.run(["fpcalc", "-raw", "-length", "1200", str(p)],
                                                capture_output=True), paths)
        print(f"   fpcalc -raw (own decode)      {fpcalc / audio_s:.5f}")
    return [fingerprint_source(str(p))[0][0] for p in paths]


def grouping(bases: list[np.ndarray], n: int, pairs: int):
    made = corpus(bases, n, copies=0.2, parts=4, seed=1)
    songs = [Song(str(i), fp) for i, fp in enumerate(made.prints)]
    minutes = np.mean([len(fp) for fp in made.prints]) * ITEM_S / 60
    print(f"2. grouping {n} songs (mean {minutes:.1f} min, {len(made.copy_of)} planted copies), one at a time")
    near = NearDuplicates(NearDuplicateSettings())
    start, cpu = time.perf_counter(), time.process_time()
    decisions = [near.decide(s) for s in songs]
    took, took_cpu = time.perf_counter() - start, time.process_time() - cpu
    grouped = {frozenset((int(d.song), int(d.other))) for d in decisions if d.other is not None}
    planted = {frozenset(pair) for pair in made.copy_of.items()}
    postings = near.index.postings()
    print(f"   index: {took:.1f} s wall, {took_cpu:.1f} CPU-s ({took_cpu / n * 1000:.2f} CPU-s per 1000 songs); "
          f"{postings / 1e6:.1f} M postings "
          f"(~{postings * 10 / 2**20:.0f} MB); copies found {len(grouped & planted)}/{len(planted)}, "
          f"false pairs {len(grouped - planted)}")
    if pairs:
        sample = songs[:pairs]
        exhaustive = NearDuplicates(NearDuplicateSettings(), exhaustive=True)
        cpu = time.process_time()
        reference = [exhaustive.decide(s) for s in sample]
        took_pairs = time.process_time() - cpu
        same = reference == decisions[:pairs]
        print(f"   all pairs on the first {pairs}: {took_pairs:.1f} CPU-s (same decisions as the index: {same}); "
              f"extrapolated to {n}: ~{took_pairs * (n / pairs) ** 2 / 3600:.0f} CPU-h")
    return made


def containment(made, bases: list[np.ndarray], clips: int) -> None:
    prints = made.prints
    partner = {**made.copy_of, **{o: c for c, o in made.copy_of.items()}}
    rng = np.random.default_rng(2)
    items = int(10 / ITEM_S)
    clip_list, cut_from = [], {}
    for k in range(clips):
        if k % 2 == 0:
            source_index = int(rng.integers(len(prints)))
            source = prints[source_index]
            cut_from[f"clip{k}"] = {source_index, partner.get(source_index, source_index)}
        else:  # a clip of music no song holds
            source = bases[k % len(bases)] ^ np.uint32(rng.integers(2**32))
        start = int(rng.integers(0, max(1, len(source) - items)))
        phases = tuple(copy(source[start:start + items], rng, 0.02, 0) for _ in range(4))
        clip_list.append(Clip(f"clip{k}", f"clip{k}", "bench", phases))
    start = time.perf_counter()
    screen = ClipScreen(ClipMatchSettings(), clip_list)
    built = time.perf_counter() - start
    cpu = time.process_time()
    found = [screen.contained(fp) for fp in prints]
    took = time.process_time() - cpu
    right = sum(f is not None and i in cut_from.get(f.clip.key, ()) for i, f in enumerate(found))
    wrong = sum(f is not None and i not in cut_from.get(f.clip.key, ()) for i, f in enumerate(found))
    holders = set().union(*cut_from.values()) if cut_from else set()
    print(f"3. screening {len(prints)} songs against {clips} clips of 10 s ({len(cut_from)} cut from them, with "
          f"2 % bit errors): index {built:.2f} s, {took:.1f} CPU-s ({took / len(prints) * 1000:.2f} per 1000 songs); "
          f"songs holding a clip flagged {right}/{len(holders)}, wrongly flagged {wrong}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=6, help="rendered songs for the fingerprint cost")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each rendered song")
    parser.add_argument("--songs", type=int, default=10_000, help="N: songs to group")
    parser.add_argument("--pairs", type=int, default=50, help="K: songs for the all-pairs reference (0: skip)")
    parser.add_argument("--clips", type=int, default=1000, help="M: evaluation clips to screen against")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_songs(Path(tmp), args.renders, args.seconds)
        bases = fingerprint_cost(paths)
    made = grouping(bases, args.songs, args.pairs)
    containment(made, bases, args.clips)
    print(f"peak memory (this process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
