"""Song-form benchmark: CPU cost against the rest of MIR, and quality, tuned method vs textbook baseline.

    .venv/bin/python bench/form.py              # the renders of mfpipe.mir.form_synth (tuned-on + held-out)
    .venv/bin/python bench/form.py --long       # ...and the 20-minute render (MIR on it takes ~1 min)
    .venv/bin/python bench/form.py --no-mir     # quality with the true grid only (no madmom)

For every render with a known form it prints:
  * CPU seconds per audio second (time.process_time, this process, single-threaded) of the rest of
    MIR (MirAnalyzer.analyse: beats, key, chords, loudness), of the form analysis
    (mfpipe.mir.form.analyse_form) and their ratio. Target: form <= 10 % of the rest.
  * Boundary F-measure at +-3 s (mir_eval.segment.detection, window=3) and pairwise label F
    (mir_eval.segment.pairwise) of the tuned method and of the plain Laplacian baseline
    (McFee & Ellis with librosa's example parameters, k = 5, no downbeat snapping), both on
    madmom's beat grid (the stage's input) and, for the tuned method, on the true grid.
  * The same averaged over the renders.
The first call of librosa's functions in a process compiles/loads code (about 1-2 s, once per
worker); it is paid before the clock starts and printed separately.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test renders: tests/support

import numpy as np  # noqa: E402 (the thread limits above come first)

from mfpipe.mir.config import FormConfig  # noqa: E402 (the thread limits above come first)
from mfpipe.mir.form import analyse_form  # noqa: E402
from support import render_form as fs  # noqa: E402 (the thread limits above come first)
from support.form_baseline import plain_laplacian  # noqa: E402
from support.render_mir import RATE  # noqa: E402 (the thread limits above come first)


def scores(spec: fs.FormSpec, sections: list[dict]) -> tuple[float, float]:
    import mir_eval

    if not sections:
        return 0.0, 0.0
    ref_i, ref_l = spec.intervals_labels()
    est_i = np.array([[s["start"], s["end"]] for s in sections])
    est_l = [s["label"] for s in sections]
    return (float(mir_eval.segment.detection(ref_i, est_i, window=3)[2]),
            float(mir_eval.segment.pairwise(ref_i, ref_l, est_i, est_l)[2]))


def timed(fn, *args):
    started = time.process_time()
    out = fn(*args)
    return out, time.process_time() - started


def name_accuracy(spec: fs.FormSpec, sections: list[dict]) -> tuple[int, int]:
    """(right, named): of the estimated sections with a name, how many carry the name of the true
    section they overlap most."""
    truth = spec.sections()
    right = named = 0
    for s in sections:
        if s["name"] is None:
            continue
        named += 1
        overlap = [max(0.0, min(s["end"], t["end"]) - max(s["start"], t["start"])) for t in truth]
        right += truth[int(np.argmax(overlap))]["name"] == s["name"]
    return right, named


def make_analyzer():
    """MirAnalyzer with the default tool settings (MirSettings; MirConfig in older trees)."""
    from mfpipe.mir import MirAnalyzer

    try:
        from mfpipe.mir.config import MirSettings as Settings
    except ImportError:
        from mfpipe.pipeline.config import MirConfig as Settings
    return MirAnalyzer(Settings())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="also the 20-minute render")
    parser.add_argument("--no-mir", action="store_true", help="skip madmom/essentia/Chordino (true grid only)")
    args = parser.parse_args()

    cfg = FormConfig()
    makers = list(fs.FORMS) + list(fs.HELD_OUT) + ([fs.long_form] if args.long else [])
    held_out = {make().name for make in fs.HELD_OUT}
    analyzer = None
    if not args.no_mir:
        analyzer = make_analyzer()  # pins this process to one thread
    # One-time costs (imports, compiled code) before any clock runs.
    warm = fs.render_form(fs.short_form(30))
    (_, first_call) = timed(analyse_form, warm, RATE, [], [], 30.0, cfg)
    plain_laplacian(warm, RATE, np.arange(0, 30, 0.5), 30.0)
    print(f"one-time cost of the first form call in a process: {first_call:.2f} CPU-s\n")

    head = (f"{'render':40s} {'dur s':>6s} {'mir c/s':>8s} {'form c/s':>8s} {'ratio':>6s} | "
            f"{'tuned F3':>8s} {'PF':>5s} | {'plain F3':>8s} {'PF':>5s} | {'truth-grid F3':>13s} {'PF':>5s} | names")
    print(head)
    print("-" * len(head))
    rows = []
    for make in makers:
        spec = make()
        audio = fs.render_form(spec)
        duration = spec.duration_s
        truth_res = analyse_form(audio, RATE, spec.beats(), spec.downbeats(), duration, cfg)
        t_f3, t_pf = scores(spec, truth_res.sections)
        if analyzer is not None:
            facts, mir_cpu = timed(analyzer.analyse, audio)
            beats, downbeats = facts.beats, facts.downbeats
        else:
            mir_cpu, beats, downbeats = float("nan"), list(spec.beats()), list(spec.downbeats())
        result, form_cpu = timed(analyse_form, audio, RATE, beats, downbeats, duration, cfg)
        f3, pf = scores(spec, result.sections)
        if spec.name.startswith("long"):
            p_f3 = p_pf = float("nan")  # the baseline's beats x beats matrices: skipped at 20 minutes
        else:
            p_f3, p_pf = scores(spec, plain_laplacian(audio, RATE, beats, duration).sections)
        right, named = name_accuracy(spec, result.sections)
        tag = " (held out)" if spec.name in held_out else ""
        rows.append((duration, mir_cpu, form_cpu, f3, pf, p_f3, p_pf, t_f3, t_pf, right, named))
        print(f"{(spec.name + tag)[:40]:40s} {duration:6.0f} {mir_cpu / duration:8.4f} {form_cpu / duration:8.5f} "
              f"{form_cpu / mir_cpu:6.1%} | {f3:8.3f} {pf:5.3f} | {p_f3:8.3f} {p_pf:5.3f} | {t_f3:13.3f} {t_pf:5.3f}"
              f" | {right}/{named}")
        sys.stdout.flush()
    a = np.array(rows, dtype=float)
    total = a[:, 0].sum()
    print("-" * len(head))
    print(f"{'mean (CPU: totals / total audio)':40s} {total:6.0f} {a[:, 1].sum() / total:8.4f} "
          f"{a[:, 2].sum() / total:8.5f} {a[:, 2].sum() / a[:, 1].sum():6.1%} | {a[:, 3].mean():8.3f} "
          f"{a[:, 4].mean():5.3f} | {np.nanmean(a[:, 5]):8.3f} {np.nanmean(a[:, 6]):5.3f} | "
          f"{a[:, 7].mean():13.3f} {a[:, 8].mean():5.3f} | {int(a[:, 9].sum())}/{int(a[:, 10].sum())}")
    print("\nmir c/s, form c/s: CPU-s per audio-s; ratio: form / rest of MIR (target <= 10 %).")
    print("tuned and plain: on madmom's grid (the stage's input); truth-grid: tuned method on the true grid.")
    print("names: sections whose guessed name matches the true section's / sections given a name.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
