"""Benchmark: surface-caption throughput, batched across windows vs one conversation at a time.

    python bench/caption.py                 # GPU: full-size model; no GPU: the tiny CPU variant
    python bench/caption.py --size tiny     # the tiny variant anywhere (keeps this script from rotting)
    python bench/caption.py --batch 16,32,64 --windows 256 --loop-windows 16

The full-size variant builds Music Flamingo with RANDOM weights and the real 8B
sizes (AF-Whisper encoder = Whisper large-v3 sizes, 32 layers x 1280; Qwen2.5-7B
decoder, 28 layers x 3584; bf16) straight on the GPU: no download. Random
weights run the same arithmetic as trained ones, and every clip generates exactly
`--new-tokens` tokens (min_new_tokens = max_new_tokens), so the figures do not
depend on what the model would say. Each "window" is a full 30 s clip (750 audio
tokens) with the caption prompt, as the caption stage sends them.

Reports windows/s for `AudioLM.generate` batched (per batch size) and for the
model card's way (one conversation per `generate` call), the speed-up, and
peak GPU memory. Target from the issue: batched >= 20x the loop. Besides:
yes/no judgements per second as the quality filter makes them (`AudioLM.yes_no`,
one forward pass each, batched), and whether batched greedy captions equal
one-at-a-time ones window by window (transformers#44155 reports leakage between
tracks in AF3 batches; in bf16 a few tokens may also differ from kernel
rounding alone, so the report gives the first differing token per window).

This is the check to run on a lent GPU machine (CUDA torch + transformers only,
no vLLM, Ray or NeMo): `python bench/caption.py --json`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


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


def clips(count: int, seed: int = 0) -> list[np.ndarray]:
    """Full 30 s windows of a noisy chord, different per clip."""
    from mfpipe.backends.audiolm import SAMPLE_RATE, WINDOW_S

    rng = np.random.default_rng(seed)
    t = np.arange(int(WINDOW_S * SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
    out = []
    for _ in range(count):
        f = rng.uniform(110, 440)
        tone = sum(np.sin(2 * np.pi * f * r * t) for r in (1.0, 1.25, 1.5)) / 3
        out.append((0.3 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32))
    return out


def timed(lm, queries, new_tokens: int, batch_size: int) -> dict:
    import torch

    cuda = torch.cuda.is_available() and lm.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    answers = lm.generate(queries, max_new_tokens=new_tokens, min_new_tokens=new_tokens, batch_size=batch_size)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    failed = [a.error for a in answers if a.error]
    if failed:
        raise RuntimeError(f"{len(failed)} windows failed, e.g. {failed[0]}")
    return {"batch_size": batch_size, "windows": len(queries), "seconds": round(seconds, 3),
            "windows_per_s": round(len(queries) / seconds, 4),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}


def judgements(lm, queries, count: int, batch_size: int) -> dict:
    """Yes/no judgements per second, as the quality filter asks them (one forward pass each)."""
    import torch

    from mfpipe.backends.audiolm import Query

    asked = [Query(q.audio, "Is the proposed answer right for the music you hear? Proposed answer: a piano.")
             for q in (queries * (count // len(queries) + 1))[:count]]
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    answers = lm.yes_no(asked, batch_size=batch_size)
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert all(a.error is None for a in answers), next(a.error for a in answers if a.error)
    return {"judgements": count, "batch_size": batch_size, "seconds": round(seconds, 3),
            "per_s": round(count / seconds, 2)}


def same_when_batched(lm, queries, new_tokens: int, batch_size: int) -> dict:
    """Greedy captions of the same windows batched and one at a time: identical, or where they part."""
    together = lm.generate(queries, max_new_tokens=new_tokens, min_new_tokens=new_tokens, batch_size=batch_size)
    alone = lm.generate(queries, max_new_tokens=new_tokens, min_new_tokens=new_tokens, batch_size=1)
    first = []
    for a, b in zip(together, alone):
        ta, tb = lm.tokenizer.encode(a.text or ""), lm.tokenizer.encode(b.text or "")
        first.append(next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y),
                          None if len(ta) == len(tb) else min(len(ta), len(tb))))
    return {"windows": len(queries), "identical": sum(f is None for f in first), "first_difference": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("auto", "full", "tiny"), default="auto",
                        help="auto: full on a GPU, tiny on CPU")
    parser.add_argument("--batch", default=None, help="batch sizes to try, comma-separated")
    parser.add_argument("--windows", type=int, default=None, help="windows per batched run")
    parser.add_argument("--loop-windows", type=int, default=None, help="windows for the one-at-a-time loop")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--attn", default="sdpa", help="sdpa, flash_attention_2 or eager")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads; the tiny variant defaults to 1 (a 64-wide model gains nothing "
                             "from more, and busy cores make OpenMP spin)")
    parser.add_argument("--judgements", type=int, default=None, help="yes/no judgements to time (batched)")
    parser.add_argument("--equal-windows", type=int, default=None,
                        help="windows whose batched and one-at-a-time greedy captions are compared")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    import torch

    from mfpipe.backends.audiolm import AudioLM, Query
    from mfpipe.prompts import load_prompt

    gpu = torch.cuda.is_available()
    size = args.size if args.size != "auto" else ("full" if gpu else "tiny")
    if size == "full" and not gpu:
        parser.error("the full-size variant needs a GPU (about 20 GB free); use --size tiny")
    threads = args.threads or (1 if size == "tiny" else None)
    if threads:
        torch.set_num_threads(threads)
    batches = [int(b) for b in (args.batch or ("16,32,64" if size == "full" else "4,16")).split(",")]
    windows = args.windows or (max(batches) * 4 if size == "full" else 16)
    loop_windows = args.loop_windows or (16 if size == "full" else 8)

    built = time.perf_counter()
    model, processor = full_size_model(args.attn) if size == "full" else tiny_model(args.attn)
    build_s = time.perf_counter() - built
    lm = AudioLM.from_model(model, processor, name=f"music-flamingo-{size}-random", random_weights=True)
    weights_gib = torch.cuda.memory_allocated() / 2**30 if gpu and size == "full" else None
    prompt = load_prompt("caption_window").text.strip()
    audio = clips(max(windows, loop_windows))
    queries = [Query(a, prompt) for a in audio]

    lm.generate(queries[:2], max_new_tokens=4, batch_size=2)  # warm-up: kernels, allocator
    runs = [timed(lm, queries[:windows], args.new_tokens, b) for b in batches]
    loop = timed(lm, queries[:loop_windows], args.new_tokens, 1)
    judged = judgements(lm, queries, args.judgements or (4 * max(batches) if size == "full" else 16), max(batches))
    equal = same_when_batched(lm, queries[: args.equal_windows or (16 if size == "full" else 8)], args.new_tokens,
                              max(batches))
    best = max(runs, key=lambda r: r["windows_per_s"])
    report = {
        "variant": size,
        "device": (torch.cuda.get_device_name() if gpu and size == "full"
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "dtype": str(lm.dtype).replace("torch.", ""), "attn": lm.attn_implementation,
        "new_tokens": args.new_tokens, "build_s": round(build_s, 1),
        "weights_gib": round(weights_gib, 2) if weights_gib is not None else None,
        "batched": runs, "loop": loop, "yes_no": judged, "batched_equals_unbatched": equal,
        "speedup_best": round(best["windows_per_s"] / loop["windows_per_s"], 2),
        "target_speedup": 20,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"Music Flamingo caption benchmark: {size} model ({report['params_m']:,} M params, RANDOM weights), "
          f"{report['dtype']}, {report['attn']}, {report['device']}, {args.new_tokens} new tokens per window")
    if weights_gib is not None:
        print(f"  weights on GPU: {weights_gib:.2f} GiB (built in {build_s:.0f} s)")
    for r in runs + [loop]:
        label = "loop (1 conversation per call)" if r is loop else f"batched, {r['batch_size']} per call"
        mem = f", peak GPU {r['peak_gpu_gib']} GiB" if r["peak_gpu_gib"] is not None else ""
        print(f"  {label:<32} {r['windows']:>4} windows in {r['seconds']:>8.2f} s = "
              f"{r['windows_per_s']:>8.3f} windows/s{mem}")
    print(f"  speed-up of the best batch size over the loop: {report['speedup_best']}x (target >= 20x on a GPU)")
    print(f"  yes/no judgements: {judged['judgements']} in {judged['seconds']} s = {judged['per_s']}/s "
          f"(batch {judged['batch_size']})")
    print(f"  batched = one at a time: {equal['identical']} of {equal['windows']} windows identical; "
          f"first differing token per window: {equal['first_difference']}")


if __name__ == "__main__":
    main()
