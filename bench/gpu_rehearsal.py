"""GPU rehearsal of the production path, for a GPU machine with no model hub.

    .venv/bin/python bench/gpu_rehearsal.py --songs 8 --work /scratch/rehearsal

What it does (every model has the production architecture and size, with RANDOM weights):
1. builds a full-size Music Flamingo (the 2601-hf sizes, bf16, ~17 GB on disk) and a random-init
   Parakeet TDT 0.6B `.nemo`;
2. makes `--songs` distinct variants of the bundled example songs;
3. runs `mfpipe run --profile production --stage all`, with the model locations swapped for those
   and the LLM a small local model (SmolLM2, `mfpipe models prepare`) that mfpipe serves itself with
   the CUDA vLLM of `.venv-vllm`, inside a Ray actor holding its GPU share, under the production name;
4. samples `nvidia-smi` every second meanwhile and prints, per stage, its seconds, and for the run the
   peak GPU memory per GPU and the fraction of samples with the GPUs busy.

Needs: CUDA torch in .venv, the CUDA vLLM in .venv-vllm (scripts/install.sh on a GPU machine), ~40 GB
of disk under --work, ~30 GB of GPU memory. Not run in CI (it needs a GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import make_variants  # noqa: E402  (bench/e2e.py: distinct variants of the examples)

# Manifest flags the small stand-in LLM cannot take (the gpt-oss reasoning parser reads only gpt-oss output).
SERVER_ARGS = ["--tensor-parallel-size=1", "--max-model-len=8192", "--max-num-seqs=256", "--enable-prefix-caching"]


class GpuSampler(threading.Thread):
    """nvidia-smi once a second: memory used and utilisation per GPU."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[list[tuple[float, float]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,utilization.gpu",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if out.returncode == 0:
                self.samples.append([tuple(float(x) for x in line.split(",")) for line in out.stdout.splitlines()])

    def report(self) -> dict:
        if not self.samples:
            return {}
        gpus = len(self.samples[0])
        peak = [max(s[g][0] for s in self.samples if len(s) > g) for g in range(gpus)]
        busy = [sum(s[g][1] > 0 for s in self.samples if len(s) > g) / len(self.samples) for g in range(gpus)]
        mean = [sum(s[g][1] for s in self.samples if len(s) > g) / len(self.samples) for g in range(gpus)]
        return {"gpus": gpus, "peak_memory_mib": peak, "busy_fraction": [round(b, 3) for b in busy],
                "mean_utilization_pct": [round(m, 1) for m in mean], "samples": len(self.samples)}


def build_models(work: Path) -> dict[str, Path]:
    from mfpipe.localmodels.htdemucs import build_random_htdemucs
    from mfpipe.localmodels.parakeet import FULL_0_6B, build_tiny_parakeet

    mf = work / "music-flamingo-8b-random"
    if not (mf / "config.json").is_file():
        # In a process of its own: the 17 GB it builds on the GPU is freed when it exits, so this process's
        # GPU memory (and the run's peak, sampled by nvidia-smi) holds only what the pipeline loads.
        started = time.time()
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from mfpipe.localmodels.music_flamingo import build_full_size_random; "
                        "build_full_size_random(Path(sys.argv[1]), device='cuda')", str(mf)], check=True)
        print(f"built Music Flamingo 8B (random) in {time.time() - started:.0f} s", file=sys.stderr)
    parakeet = work / "parakeet-tdt-0.6b-random.nemo"
    if not parakeet.is_file():
        build_tiny_parakeet(parakeet, sizes=FULL_0_6B)
    demucs = build_random_htdemucs(work / "htdemucs-random.th")
    return {"mf": mf, "parakeet": parakeet, "demucs": demucs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=8)
    parser.add_argument("--work", type=Path, required=True, help="folder for the models, songs and output")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        parser.error("this rehearsal needs a GPU (CUDA torch in .venv)")
    args.work.mkdir(parents=True, exist_ok=True)
    models = build_models(args.work)
    songs = args.work / "songs"
    songs.mkdir(exist_ok=True)
    make_variants(args.songs, songs)
    out = args.work / f"out-{int(time.time())}"
    sets = {"caption.model": models["mf"], "filter.model": models["mf"], "think.model": models["mf"],
            "lyrics.model": models["parakeet"], "lyrics.separation.model": models["demucs"],
            # No hub: Whisper large-v3 (language ID, fallback) cannot load; every song is taken as English.
            "lyrics.language.detector": "assume", "lyrics.language.assume_language": "en",
            "lyrics.language.fallback_model": "null", "llm.model": "openai/gpt-oss-120b",
            "llm.server.local_model": "smollm2-135m-instruct", "llm.server.args": json.dumps(SERVER_ARGS),
            "llm.sampling.reasoning_effort": "null",
            # The variants are one recording each, ms apart: grouped, they would be 4 songs.
            "ingest.near_duplicates.enabled": "false"}
    cmd = [sys.executable, "-m", "mfpipe.pipeline.cli", "run", "--profile", "production", "--stage", "all",
           "--input", str(songs), "--output", str(out), *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    sampler = GpuSampler()
    sampler.start()
    started = time.time()
    proc = subprocess.run(cmd)
    wall = time.time() - started
    sampler.stop.set()
    summary = json.loads(next((out / "_runs").glob("*/summary.json")).read_text())
    print(f"\nGPU rehearsal: {args.songs} songs, exit {proc.returncode}, {wall:.0f} s wall, "
          f"status {summary['status']}")
    for line in summary.get("plan") and _plan_lines(summary["plan"]) or []:
        print(f"  {line}")
    for s in summary["summary"]:
        print(f"  {s['stage']:<11} {s['seconds']:>8.1f} s  {s['rows_out']:>4} rows  {s['rejected']:>3} rejected"
              + (f"  ({s['error']})" if s["error"] else ""))
    print("  gpu:", json.dumps(sampler.report()))


def _plan_lines(plan: dict) -> list[str]:
    return [f"phase {i + 1}: {', '.join(p['stages'])}" + (f" + LLM server {p['server']['gpus']} GPU" if p["server"]
                                                          else "") for i, p in enumerate(plan["phases"])]


if __name__ == "__main__":
    main()
