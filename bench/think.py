"""Throughput of the quality filter and MF-Think, one worker each, as the pipeline runs them.

  filter: FilterStage.process_batch over the songs in batches of filter.resources.batch_size
          → seconds per song, audio-LM judgements (forward passes) per song and per second;
  think:  ThinkStage.process_batch over the same songs (with the filter's judgements) in batches
          of think.resources.batch_size → chains per second, kept / rewritten / dropped, LLM
          requests and tokens, and how the time splits between the LLM and the step checks.

The songs: the outputs of an earlier run (`--from OUT`, which must hold ingest, synthesize and
mir; lyrics is used when present), or by default the bundled example songs with synthesize rows
shaped like the cpu profile's (one open and one multiple-choice item per skill) whose answers
state the songs' real tempo/key/meter, repeated to `--songs`. One untimed warm-up batch first
(model load, first forward passes, the server's grammar compilation).

    .venv/bin/python bench/think.py                      # starts the cpu-profile vLLM server (SmolLM2)
    .venv/bin/python bench/think.py --url http://127.0.0.1:8000/v1 --songs 16
    .venv/bin/python bench/think.py --from mfpipe-out --set profile=production --url http://vllm:8000/v1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from mfpipe.backends.vllm_server import VllmServer
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas import FilterRecord, Reject, ThinkRecord
from mfpipe.stages.filter import FilterStage
from mfpipe.stages.ingest import IngestStage
from mfpipe.stages.think import ThinkStage


def example_rows(n: int, config) -> list[dict[str, Any]]:
    root = resources.files("mfpipe.examples")
    truth = json.loads(root.joinpath("truth.json").read_text())
    ingest = IngestStage.from_config(config, RunInfo("bench", "bench"))
    ingest.setup()
    base = []
    for song in truth:
        (record,) = ingest.process_batch([{"source": str(root.joinpath(song["file"]))}])
        base.append((song, record.model_dump(exclude={"provenance"})))
    rows = []
    for i in range(n):
        song, row = base[i % len(base)]
        key = f"{song['key']} {song['mode']}"
        qa = []
        for skill, question, answer, options in [
            ("temporal", "When does the melody first enter?", "In the first bars.", ["0:00", "0:20", "0:40", "1:00"]),
            ("attribute", "What is the tempo?", f"About {song['bpm']} BPM.",
             [f"{song['bpm']} BPM", f"{song['bpm'] + 30} BPM", f"{song['bpm'] - 25} BPM", "200 BPM"]),
            ("harmony_theory", "Which key is it in?", f"It is in {key}.", [key, "F# major", "Bb minor", "D major"]),
            ("lyric_vocal", "Are there vocals?", "There are spoken words." if song["lyrics"] else "No vocals.",
             ["Yes", "No"]),
            ("comparative_structural", "How is the piece organised?", "One progression repeats.",
             ["One progression repeats", "Verse and chorus alternate", "It never repeats", "A fugue"]),
        ]:
            qa.append({"skill": skill, "question": question, "answer": answer, "options": []})
            qa.append({"skill": skill, "question": question, "answer": options[0], "options": options})
        rows.append({**row, "song_id": f"{row['song_id'][:56]}-{i:07d}",
                     "synthesize": {"caption": f"A {song['genre']} piece at {song['bpm']} BPM in {key}, in "
                                               f"{song['meter']}/4 time, with {', '.join(song['instruments'])}.",
                                    "qa": qa, "flags": []},
                     "mir": {"bpm": float(song["bpm"]), "meter": song["meter"], "key": song["key"],
                             "mode": song["mode"], "key_strength": 0.8, "chords": song["chord_timeline"],
                             "loudness_lufs": -14.0},
                     "lyrics": None})
    return rows


def run_rows(out: Path, n: int) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    def table(stage: str) -> dict[str, dict]:
        folder = out / stage
        if not list(folder.glob("*.parquet")):
            return {}
        rows = pq.read_table(folder).to_pylist()
        return {r.pop("song_id"): {k: v for k, v in r.items() if k not in ("provenance", "source")} for r in rows}

    ingest = {r["song_id"]: r for r in pq.read_table(out / "ingest").to_pylist()}
    synth, mir, lyrics = table("synthesize"), table("mir"), table("lyrics")
    rows = [{**ingest[s], "synthesize": synth[s], "mir": mir.get(s), "lyrics": lyrics.get(s)} for s in synth]
    return rows[:n]


def batches(rows: list, size: int):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


class TimedThink(ThinkStage):
    """The stage as it is, with the time spent in step checks (audio-LM + MIR) counted."""

    check_s = 0.0

    def setup_stage(self) -> None:
        super().setup_stage()
        check = self.maker.check

        def timed(songs, jobs):
            started = time.perf_counter()
            try:
                return check(songs, jobs)
            finally:
                self.check_s += time.perf_counter() - started

        self.maker.check = timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an OpenAI-compatible server already serving llm.model (default: start one)")
    ap.add_argument("--from", dest="source", type=Path, help="output folder of an earlier run")
    ap.add_argument("--songs", type=int, default=8)
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    args = ap.parse_args()

    import torch

    overrides = ["profile=cpu", *args.set]
    config = load_config(None, overrides)
    torch.set_num_threads(max(1, int(config.filter.resources.cpus)))
    rows = run_rows(args.source, args.songs) if args.source else example_rows(args.songs, config)
    print(f"{len(rows)} songs, profile {config.profile}, torch threads {torch.get_num_threads()}")

    # ------------------------------------------------------------ filter
    started = time.perf_counter()
    judge = FilterStage.from_config(config, RunInfo("bench", "bench"))
    judge.setup()
    print(f"filter setup (audio-LM load): {time.perf_counter() - started:.1f} s")
    judge.process_batch(rows[:1])  # warm-up
    size = config.filter.resources.batch_size
    started = time.perf_counter()
    judged: list[FilterRecord | Reject] = []
    for batch in batches(rows, size):
        judged.extend(judge.process_batch(batch))
    seconds = time.perf_counter() - started
    records = [r for r in judged if isinstance(r, FilterRecord)]
    # one forward pass per window per judgement: the caption's score, each item's yes/no, and
    # the multiple-choice items' own answer
    by_id = {r["song_id"]: r for r in rows}
    passes = sum(len(r.caption.windows) + sum(
        len(q.windows) * (2 if by_id[r.song_id]["synthesize"]["qa"][q.index]["options"] else 1) for q in r.qa)
        for r in records)
    kept = sum(r.kept_items for r in records)
    dropped = sum(r.dropped_items for r in records)
    print(f"filter: {seconds:.1f} s for {len(rows)} songs (batch {size}) = {seconds / len(rows):.2f} s/song; "
          f"{passes / len(records):.1f} audio-LM judgements/song, {passes / seconds:.1f}/s; "
          f"items kept {kept}, dropped {dropped}; rejects {len(judged) - len(records)}")

    # ------------------------------------------------------------ think
    for row, record in zip(rows, judged):
        row["filter"] = record.model_dump() if isinstance(record, FilterRecord) else None
    with contextlib.ExitStack() as stack:
        url = args.url
        if not url:
            server = VllmServer.from_config(config.llm)
            started = time.perf_counter()
            stack.enter_context(server)
            print(f"vLLM server start: {time.perf_counter() - started:.1f} s ({server.log_path})")
            url = server.base_url
        config = load_config(None, [*overrides, f"llm.base_url={url}"])
        think = TimedThink.from_config(config, RunInfo("bench", "bench"))
        think.setup()
        try:
            think.process_batch([r for r in rows[:1] if r["filter"]])  # warm-up
            think.check_s = 0.0
            size = config.think.resources.batch_size
            started = time.perf_counter()
            results: list[ThinkRecord | Reject] = []
            for batch in batches([r for r in rows if r["filter"]], size):
                results.extend(think.process_batch(batch))
            seconds = time.perf_counter() - started
        finally:
            think.teardown()
    records = [r for r in results if isinstance(r, ThinkRecord)]
    rejects = [r for r in results if isinstance(r, Reject)]
    chains = [c for r in records for c in r.chains]
    considered = sum(r.considered for r in records) + sum(
        1 for r in rejects if r.song_id not in {x.song_id for x in records})
    tokens = sum(r.usage.completion_tokens for r in records)
    requests = sum(r.usage.requests for r in records)
    steps = [s for c in chains for s in c.steps]
    by = {v: sum(s.verdict == v for s in steps) for v in ("correct", "wrong", "unverifiable")}
    errors: dict[str, int] = {}
    for r in rejects:
        errors[r.error] = errors.get(r.error, 0) + 1
    print(f"think: {seconds:.1f} s for {len(rows)} songs (batch {size}); chains considered ~{considered}, "
          f"kept {sum(c.action == 'kept' for c in chains)}, rewritten {sum(c.action == 'rewritten' for c in chains)}, "
          f"dropped {len(rejects)} {errors or ''}")
    print(f"think: {len(chains) / seconds:.3f} surviving chains/s, {considered / seconds:.3f} chains handled/s; "
          f"step checks {think.check_s:.1f} s ({100 * think.check_s / seconds:.0f}%), the rest waiting on the LLM "
          f"({requests} requests in the songs that kept a row, {tokens} generated tokens)")
    print(f"think: step verdicts of the kept chains: {by}; checked by MIR "
          f"{sum(s.checked_by == 'mir' for s in steps)}, "
          f"by the audio-LM {sum(s.checked_by == 'audio_lm' for s in steps)}")


if __name__ == "__main__":
    main()
