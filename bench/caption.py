"""Benchmark and GPU check: Music Flamingo captioning batched across windows vs one conversation at a
time, yes/no judgements, and whether a batch changes any row's output.

    python bench/caption.py --quick          # one H200: under 3 minutes, every figure below
    python bench/caption.py                  # GPU: the full run; no GPU: the tiny CPU variant
    python bench/caption.py --size tiny      # the tiny variant anywhere (keeps this script from rotting)
    python bench/caption.py --cache static --compile   # also time a static KV cache + torch.compile

The full-size variant builds Music Flamingo with RANDOM weights and the real 8B sizes (AF-Whisper
encoder = Whisper large-v3 sizes, 32 layers x 1280; Qwen2.5-7B decoder, 28 layers x 3584; bf16) straight
on the GPU: no download. Random weights run the same arithmetic as trained ones, and every clip generates
exactly `--new-tokens` tokens (min_new_tokens = max_new_tokens), so the throughput figures do not depend
on what the model would say.

What it reports, each result printed (and flushed) as soon as it is measured, so a run cut short by a
time limit still returns what it measured (`--json`: one JSON object per line):
- windows/s of `AudioLM.generate` batched, per batch size, and the model card's way (one conversation per
  call), the speed-up; peak allocated and reserved GPU memory; every batch that failed (out of memory)
  and was halved, with its size and error (a halved batch is not what its size says);
- yes/no judgements per second as the quality filter makes them (one forward pass each);
- batched == one at a time, on clips of mixed lengths (5, 17 and 30 s by default) and different prompts,
  so left padding is exercised (transformers#44155 reports leakage between tracks in AF3 batches): the
  GENERATED TOKEN IDS compared row by row (decoded text would hide differences: with the test tokenizer
  most random ids decode to ''), and the first step's log-probabilities over the whole vocabulary, max |Δ|.
  In bf16 a few ids may differ from kernel rounding alone; the log-probability gap tells rounding (small)
  from leakage (large).

The check to run on a lent GPU machine (CUDA torch + transformers only, no vLLM, Ray or NeMo):
`python bench/caption.py --quick --json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROMPTS = (
    None,  # the caption stage's own prompt
    "Which instruments carry the melody, and how does the texture change over this excerpt?",
    "Describe the rhythm: tempo feel, meter and groove.",
)


def full_size_model(attn: str):
    """Music Flamingo at the 8B checkpoint's sizes, random bf16 weights, built on the GPU."""
    from mfpipe.localmodels.music_flamingo import build_full_size_random

    return build_full_size_random(device="cuda", attn=attn)


def tiny_model(attn: str):
    import torch
    from transformers import AutoProcessor, MusicFlamingoForConditionalGeneration

    from mfpipe.localmodels.music_flamingo import build_tiny_music_flamingo

    folder = build_tiny_music_flamingo(Path(tempfile.mkdtemp()) / "tiny")
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = MusicFlamingoForConditionalGeneration.from_pretrained(folder, local_files_only=True,
                                                                  dtype=torch.float32, attn_implementation=attn)
    return model.eval(), processor


def clip(seconds: float, rng) -> np.ndarray:
    """A noisy chord of `seconds`, different per call."""
    from mfpipe.backends.audiolm import SAMPLE_RATE

    t = np.arange(int(round(seconds * SAMPLE_RATE)), dtype=np.float32) / SAMPLE_RATE
    f = rng.uniform(110, 440)
    tone = sum(np.sin(2 * np.pi * f * r * t) for r in (1.0, 1.25, 1.5)) / 3
    return (0.3 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def queries(count: int, lengths: list[float], caption_prompt: str, seed: int = 0):
    """`count` queries cycling through `lengths` and the prompts."""
    from mfpipe.backends.audiolm import Query

    rng = np.random.default_rng(seed)
    return [Query(clip(lengths[i % len(lengths)], rng), PROMPTS[i % len(PROMPTS)] or caption_prompt)
            for i in range(count)]


class Report:
    """Prints each result as it comes (a table line, or a JSON line) and keeps them for the summary."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.results: dict[str, object] = {}

    def emit(self, key: str, value: dict, line: str) -> None:
        self.results[key] = value
        print(json.dumps({key: value}) if self.as_json else line, flush=True)


def _sync(lm) -> None:
    import torch

    if lm.device.type == "cuda":
        torch.cuda.synchronize()


def _memory(lm) -> dict:
    import torch

    if lm.device.type != "cuda":
        return {}
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def timed(lm, qs, new_tokens: int, batch_size: int) -> dict:
    import torch

    if lm.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    lm.splits.clear()
    _sync(lm)
    start = time.perf_counter()
    answers = lm.generate(qs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, batch_size=batch_size)
    _sync(lm)
    seconds = time.perf_counter() - start
    failed = [a.error for a in answers if a.error]
    return {"batch_size": batch_size, "windows": len(qs), "seconds": round(seconds, 3),
            "windows_per_s": round(len(qs) / seconds, 4), "failed": len(failed),
            "halved_batches": [{"size": n, "error": e} for n, e in lm.splits], **_memory(lm)}


def judgements(lm, qs, count: int, batch_size: int) -> dict:
    from mfpipe.backends.audiolm import Query

    asked = [Query(q.audio, "Is the proposed answer right for the music you hear? Proposed answer: a piano.")
             for q in (qs * (count // len(qs) + 1))[:count]]
    lm.splits.clear()
    _sync(lm)
    start = time.perf_counter()
    answers = lm.yes_no(asked, batch_size=batch_size)
    _sync(lm)
    seconds = time.perf_counter() - start
    return {"judgements": count, "batch_size": batch_size, "seconds": round(seconds, 3),
            "per_s": round(count / seconds, 2), "failed": sum(a.error is not None for a in answers),
            "halved_batches": len(lm.splits)}


def same_when_batched(lm, qs, new_tokens: int, batch_size: int) -> dict:
    """Token ids and first-step log-probabilities, batched vs one at a time, row by row."""
    together = lm.generate(qs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, batch_size=batch_size)
    alone = lm.generate(qs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, batch_size=1)
    first = []
    for a, b in zip(together, alone):
        ta, tb = a.token_ids or (), b.token_ids or ()
        first.append(next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y),
                          None if len(ta) == len(tb) else min(len(ta), len(tb))))
    lp_batch = lm.first_step_logprobs(qs, batch_size=batch_size)
    lp_alone = lm.first_step_logprobs(qs, batch_size=1)
    gaps = [float(np.max(np.abs(x - y))) if x is not None and y is not None else None
            for x, y in zip(lp_batch, lp_alone)]
    return {"windows": len(qs), "batch_size": batch_size,
            "seconds": [round(len(q.audio) / 16000, 3) for q in qs],
            "identical_ids": sum(f is None for f in first), "first_differing_token": first,
            "first_step_logprob_max_abs_diff": max((g for g in gaps if g is not None), default=None),
            "per_window_logprob_diff": [round(g, 5) if g is not None else None for g in gaps]}


PRESETS = {  # batches, windows per batched run, loop windows, judgements, equality windows, new tokens
    "quick": dict(batch="16,32", windows=64, loop_windows=6, judgements=64, equal_windows=9, new_tokens=32),
    "full": dict(batch="16,32,64", windows=256, loop_windows=16, judgements=256, equal_windows=18, new_tokens=128),
    "tiny": dict(batch="4,16", windows=16, loop_windows=8, judgements=16, equal_windows=9, new_tokens=16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("auto", "full", "tiny"), default="auto",
                        help="auto: full on a GPU, tiny on CPU")
    parser.add_argument("--quick", action="store_true", help="the short preset (under 3 minutes on one H200)")
    parser.add_argument("--batch", default=None, help="batch sizes to try, comma-separated")
    parser.add_argument("--windows", type=int, default=None, help="windows per batched run")
    parser.add_argument("--loop-windows", type=int, default=None, help="windows for the one-at-a-time loop")
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--lengths", default="5,17,30", help="clip lengths (s) for the equality check")
    parser.add_argument("--attn", default="sdpa", help="sdpa, flash_attention_2 or eager")
    parser.add_argument("--cache", choices=("dynamic", "static"), default="dynamic",
                        help="also time the largest batch with this KV cache (static: fixed shapes)")
    parser.add_argument("--compile", action="store_true", help="also time the largest batch with torch.compile")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads; the tiny variant defaults to 1")
    parser.add_argument("--judgements", type=int, default=None, help="yes/no judgements to time (batched)")
    parser.add_argument("--equal-windows", type=int, default=None,
                        help="windows compared batched vs one at a time")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = parser.parse_args()

    import torch

    from mfpipe.backends.audiolm import WINDOW_S, AudioLM
    from mfpipe.prompts import load_prompt

    gpu = torch.cuda.is_available()
    size = args.size if args.size != "auto" else ("full" if gpu else "tiny")
    if size == "full" and not gpu:
        parser.error("the full-size variant needs a GPU (about 20 GB free); use --size tiny")
    preset = dict(PRESETS["tiny" if size == "tiny" else "quick" if args.quick else "full"])
    for key in preset:
        if getattr(args, key, None) is not None:
            preset[key] = getattr(args, key)
    threads = args.threads or (1 if size == "tiny" else None)
    if threads:
        torch.set_num_threads(threads)
    batches = [int(b) for b in str(preset["batch"]).split(",")]
    report = Report(args.json)
    new_tokens = preset["new_tokens"]

    built = time.perf_counter()
    model, processor = full_size_model(args.attn) if size == "full" else tiny_model(args.attn)
    lm = AudioLM.from_model(model, processor, name=f"music-flamingo-{size}-random", random_weights=True)
    report.emit("model", {
        "variant": size, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "dtype": str(lm.dtype).replace("torch.", ""), "attn": lm.attn_implementation,
        "device": torch.cuda.get_device_name() if lm.device.type == "cuda" else f"cpu ({torch.get_num_threads()})",
        "build_s": round(time.perf_counter() - built, 1), "new_tokens": new_tokens, **_memory(lm)},
        f"Music Flamingo {size} (RANDOM weights), built in {time.perf_counter() - built:.0f} s on "
        f"{lm.device}, {lm.dtype}, {lm.attn_implementation}; {new_tokens} new tokens per window")

    caption_prompt = load_prompt("caption_window").text.strip()
    full = queries(max(preset["windows"], preset["loop_windows"]), [WINDOW_S], caption_prompt)
    lm.generate(full[:2], max_new_tokens=4, batch_size=2)  # warm-up: kernels, allocator

    runs = []
    for b in batches:
        r = timed(lm, full[:preset["windows"]], new_tokens, b)
        runs.append(r)
        mem = f", peak {r.get('peak_allocated_gib')} GiB allocated / {r.get('peak_reserved_gib')} reserved" \
            if "peak_reserved_gib" in r else ""
        halved = f", {len(r['halved_batches'])} batch(es) HALVED (out of memory?)" if r["halved_batches"] else ""
        report.emit(f"batched_{b}", r, f"  batched, {b} per call: {r['windows']} windows in {r['seconds']:.2f} s = "
                                       f"{r['windows_per_s']:.3f} windows/s{mem}{halved}")
    loop = timed(lm, full[:preset["loop_windows"]], new_tokens, 1)
    best = max(runs, key=lambda r: r["windows_per_s"])
    report.emit("loop", loop | {"speedup_best": round(best["windows_per_s"] / loop["windows_per_s"], 2)},
                f"  one conversation per call: {loop['windows_per_s']:.3f} windows/s; best batch "
                f"({best['batch_size']}) is {best['windows_per_s'] / loop['windows_per_s']:.1f}x faster")

    judged = judgements(lm, full, preset["judgements"], max(batches))
    report.emit("yes_no", judged, f"  yes/no judgements: {judged['judgements']} in {judged['seconds']} s = "
                                  f"{judged['per_s']}/s (batch {judged['batch_size']})")

    lengths = [float(x) for x in args.lengths.split(",")]
    mixed = queries(preset["equal_windows"], lengths, caption_prompt, seed=1)
    equal = same_when_batched(lm, mixed, new_tokens, max(batches))
    report.emit("batched_equals_unbatched", equal,
                f"  batched = one at a time, {equal['windows']} clips of {args.lengths} s, {len(PROMPTS)} prompts: "
                f"{equal['identical_ids']} identical token-id rows; first-step log-prob max |Δ| "
                f"{equal['first_step_logprob_max_abs_diff']}; first differing token per row: "
                f"{equal['first_differing_token']}")

    if args.cache == "static" or args.compile:
        extra = {"cache_implementation": "static"} if args.cache == "static" else {}
        lm.generation_extra = extra
        if args.compile:
            lm.model.forward = torch.compile(lm.model.forward)
        variant = " + ".join(([f"{args.cache} cache"] if extra else []) + (["torch.compile"] if args.compile else []))
        timed(lm, full[:max(batches)], new_tokens, max(batches))  # compile / capture once
        r = timed(lm, full[:preset["windows"]], new_tokens, max(batches))
        report.emit("variant", r | {"variant": variant},
                    f"  batched, {max(batches)} per call, {variant}: {r['windows_per_s']:.3f} windows/s "
                    f"({r['windows_per_s'] / best['windows_per_s']:.2f}x the dynamic cache)")
    if args.json:
        print(json.dumps({"summary": report.results}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
