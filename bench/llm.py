"""Does the synthesize stage keep the LLM server as busy as a bare client would?

Against one vLLM server and one concurrency limit, it times
  stage: the synthesize stage's own path (SynthesizeStage.process_batch over the
         songs, in batches of synthesize.resources.batch_size, as one worker does),
  raw:   a plain asyncio loop of raw `openai` calls sending exactly the same
         requests (messages, response_format, max_tokens, sampling), bounded by
         an asyncio.Semaphore of the same size,
and prints requests/s, generated tokens/s and the ratio stage/raw (target >= 0.9).

Both run with temperature 0, so the server generates the same answers for both.
One untimed warm-up pass first (the server compiles each schema's grammar on
first use, and its first passes are slower). The server's prefix cache is reset before every pass (the server
runs with VLLM_SERVER_DEV_MODE=1 for that), and the passes alternate stage,
raw, raw, stage, ... so neither path gains from going second. Medians are
reported; on a shared machine the passes vary by tens of percent, so run
several rounds.

    .venv/bin/python bench/llm.py                      # starts the cpu-profile server (SmolLM2)
    .venv/bin/python bench/llm.py --url http://host:8000/v1 --set profile=production --songs 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from importlib import resources
from typing import Any

import httpx
import openai

from mfpipe.backends.llm import Llm
from mfpipe.backends.vllm_server import VllmServer
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas import Reject
from mfpipe.stages.synthesize import SynthesizeStage

KEYS = ["C", "D", "Eb", "E", "F", "G", "A", "Bb"]


def song_rows(n: int) -> list[dict[str, Any]]:
    """n songs with the example songs' facts, tempo and key varied so no two prompts are equal."""
    truth = json.loads(resources.files("mfpipe.examples").joinpath("truth.json").read_text())
    rows = []
    for i in range(n):
        song = truth[i % len(truth)]
        bpm = float(song["bpm"] + 3 * (i // len(truth)))
        words = []
        if song["lyrics"]:
            for j, w in enumerate(song["lyrics"].split()):
                words.append({"word": w, "start": 8.0 + 0.45 * j, "end": 8.35 + 0.45 * j})
        rows.append({
            "song_id": f"bench-{i:04d}", "source": f"bench/{i:04d}-{song['file']}",
            "duration_s": song["duration_s"], "processed_s": song["duration_s"], "truncated": False,
            "mir": {"bpm": bpm, "meter": song["meter"], "key": KEYS[i % len(KEYS)], "mode": song["mode"],
                    "key_strength": 0.8, "chords": song["chord_timeline"], "loudness_lufs": -14.0},
            "caption": {"windows": [{"start": 0.0, "end": 30.0,
                                     "text": f"A {song['genre']} piece with {', '.join(song['instruments'])}."}]},
            "lyrics": {"text": song["lyrics"] or "", "words": words, "has_vocals": bool(words),
                       "language": "en" if words else None},
        })
    return rows


def reset_prefix_cache(root_url: str) -> bool:
    try:
        return httpx.post(f"{root_url}/reset_prefix_cache", timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


def run_stage(stage: SynthesizeStage, rows: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    stage.llm.max_in_flight = 0
    cpu = time.process_time()
    started = time.perf_counter()
    results = []
    for i in range(0, len(rows), batch_size):
        results += stage.process_batch(rows[i:i + batch_size])
    wall = time.perf_counter() - started
    records = [r for r in results if not isinstance(r, Reject)]
    return {"wall": wall, "requests": sum(r.usage.requests for r in records),
            "tokens": sum(r.usage.completion_tokens for r in records), "rejects": len(results) - len(records),
            "peak": stage.llm.max_in_flight, "cpu": time.process_time() - cpu}


async def run_raw(url: str, llm: Llm, requests: list[tuple[list, dict, int]], concurrency: int) -> dict[str, Any]:
    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", timeout=llm.timeout_s, max_retries=0)
    slots = asyncio.Semaphore(concurrency)
    params = llm.request_params()
    tokens = 0

    async def one(messages, fmt, max_tokens):
        nonlocal tokens
        async with slots:
            response = await client.chat.completions.create(model=llm.model, messages=messages,
                                                             response_format=fmt, max_tokens=max_tokens, **params)
        tokens += response.usage.completion_tokens

    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(one(*r) for r in requests))
    wall = time.perf_counter() - started
    await client.close()
    return {"wall": wall, "requests": len(requests), "tokens": tokens, "rejects": 0, "peak": concurrency,
            "cpu": time.process_time() - cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="use this server (…/v1) instead of starting the profile's one")
    ap.add_argument("--songs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="each round is a stage pass and a raw pass")
    ap.add_argument("--concurrency", type=int, help="default: llm.concurrency of the profile")
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    args = ap.parse_args()

    sets = ["profile=cpu", *args.sets, "llm.sampling.temperature=0", "llm.sampling.seed=0"]
    if args.concurrency:
        sets.append(f"llm.concurrency={args.concurrency}")
    cfg = load_config(None, sets)
    server = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        llm_cfg = cfg.llm.model_copy(deep=True)
        llm_cfg.server.env["VLLM_SERVER_DEV_MODE"] = "1"  # for /reset_prefix_cache
        server = VllmServer.from_config(llm_cfg)
        print(f"starting vLLM ({cfg.llm.model}) ...", flush=True)
        started = time.perf_counter()
        server.start()
        print(f"server ready in {time.perf_counter() - started:.1f} s", flush=True)
        url = server.base_url
    try:
        cfg = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"base_url": url})})
        stage = SynthesizeStage.from_config(cfg, RunInfo("bench", cfg.content_hash()))
        stage.setup()
        rows = song_rows(args.songs)
        requests = []
        for row in rows:
            for req in stage.requests(row):
                fmt, max_tokens = stage.llm.structured_format(req.model, name=req.part,
                                                              effort=stage.llm.effort_for(req.part))
                requests.append((req.messages, fmt, max_tokens))
        root = url.rsplit("/v1", 1)[0]
        batch = cfg.synthesize.resources.batch_size
        print(f"{len(rows)} songs, {len(requests)} requests, concurrency {cfg.llm.concurrency}, "
              f"stage batch size {batch}, model {cfg.llm.model}", flush=True)
        # Warm-up, not timed: the server compiles each schema's grammar on first use, and its first
        # passes over new batch shapes are slower (seen: the first timed pass ~50 % slower).
        for _ in range(args.warmup):
            reset_prefix_cache(root)
            asyncio.run(run_raw(url, stage.llm, requests, cfg.llm.concurrency))
        passes: dict[str, list[dict[str, Any]]] = {"stage": [], "raw": []}
        order = [("stage", "raw") if r % 2 == 0 else ("raw", "stage") for r in range(args.rounds)]
        for kind in [k for pair in order for k in pair]:
            if not reset_prefix_cache(root):
                print("  (could not reset the prefix cache: start the server with VLLM_SERVER_DEV_MODE=1)")
            if kind == "stage":
                res = run_stage(stage, rows, batch)
            else:
                res = asyncio.run(run_raw(url, stage.llm, requests, cfg.llm.concurrency))
            res["rps"] = res["requests"] / res["wall"]
            res["tps"] = res["tokens"] / res["wall"]
            passes[kind].append(res)
            print(f"  {kind:5s} {res['wall']:7.1f} s  {res['requests']:4d} requests  {res['rps']:6.3f} req/s  "
                  f"{res['tps']:7.1f} tok/s  client CPU {1000 * res['cpu'] / res['requests']:5.1f} ms/request  "
                  f"peak in flight {res['peak']}  rejects {res['rejects']}", flush=True)
        stage.teardown()
        rps = {k: statistics.median(p["rps"] for p in v) for k, v in passes.items()}
        tps = {k: statistics.median(p["tps"] for p in v) for k, v in passes.items()}
        print(f"median requests/s: stage {rps['stage']:.3f}  raw {rps['raw']:.3f}  "
              f"ratio {rps['stage'] / rps['raw']:.2f}x (target >= 0.9)")
        print(f"median tokens/s:   stage {tps['stage']:.1f}  raw {tps['raw']:.1f}  "
              f"ratio {tps['stage'] / tps['raw']:.2f}x")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
