"""The production configuration rehearsed: `--profile production --stage all` as shipped, on two songs,
with only the model locations swapped for local same-architecture models (and the caption floor, which
is set for the real LLM, lifted for the 135M stand-in), on a real local Ray that declares a 141 GiB GPU
this machine lacks (a declared rehearsal: `run.cpu_rehearsal`), and `llm.base_url` at a vLLM server
started the way infra/vllm/deployment.yaml starts it (its served name, flags and API key, as far as a
CPU build and a stand-in model take them)."""

from __future__ import annotations

import json
import os
import re
import shutil
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from mfpipe.backends.vllm_server import VllmServer
from mfpipe.localmodels import model_path
from mfpipe.pipeline.config import load_config
from support.helpers import REPO, read_dir, run_mfpipe

pytestmark = pytest.mark.slow

STAGES = ["ingest", "caption", "mir", "lyrics", "synthesize", "filter", "think"]
# Flags of the manifest a stand-in cannot take: the gpt-oss reasoning parser reads only the Harmony
# format gpt-oss writes (vLLM answers 501 for any other model), and the GPU memory fraction has no
# meaning on the CPU build.
NOT_ON_A_STAND_IN = ("--reasoning-parser", "--gpu-memory-utilization")
# What the CPU build needs besides (FEASIBILITY: eager start, bfloat16, the guidance grammar backend).
API_KEY = "rehearsal-key-0123456789abcdef0123456789"
CPU_BUILD = ["--enforce-eager", "--dtype=bfloat16",
             '--structured-outputs-config={"backend": "guidance", "disable_any_whitespace": true}']


def _manifest_args() -> list[str]:
    docs = yaml.safe_load_all((REPO / "infra/vllm/deployment.yaml").read_text())
    deploy = next(d for d in docs if d and d["kind"] == "Deployment")
    return deploy["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.fixture(scope="module")
def production_llm(tmp_path_factory):
    args = _manifest_args()
    served = next(a.split("=", 1)[1] for a in args if a.startswith("--served-model-name="))
    kept = [a for a in args[1:] if not a.startswith(("--served-model-name=", "--host=", "--port=",
                                                      *NOT_ON_A_STAND_IN))]  # args[0]: the model
    cpu = load_config(None, ["profile=cpu"]).llm.server
    server = VllmServer(python=cpu.python, model=str(model_path("smollm2-135m-instruct")), served_name=served,
                        args=[*kept, *CPU_BUILD],
                        # SmolLM2 declares 8k positions; the manifest's 32k context needs vLLM's consent.
                        env={**cpu.env, "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"},
                        log_file=str(tmp_path_factory.mktemp("vllm") / "server.log"),
                        api_key=API_KEY)  # the manifest's server asks for the key of a Secret
    if not server.python.exists():
        pytest.skip("no vLLM environment (scripts/install.sh makes it)")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory, tiny_nemo, tiny_mf) -> list[str]:
    """The model locations of the production profile, swapped for local same-architecture models: tiny
    Music Flamingo and Parakeet with random weights, htdemucs with random weights, and a tiny transformers
    Whisper with random weights whose language ID is scripted to English for the language ID and the
    fallback recogniser (production: Whisper large-v3 through transformers, from the hub)."""
    from mfpipe.localmodels.htdemucs import build_random_htdemucs
    from mfpipe.localmodels.whisper_hf import build_tiny_whisper

    demucs = build_random_htdemucs(tmp_path_factory.mktemp("demucs") / "htdemucs-random.th")
    whisper = str(build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny", language="en"))
    return [f"caption.model={tiny_mf}", f"filter.model={tiny_mf}", f"think.model={tiny_mf}",
            f"lyrics.model={tiny_nemo}", f"lyrics.separation.model={demucs}",
            f"lyrics.language.detector_model={whisper}", f"lyrics.language.fallback_model={whisper}"]


def test_the_production_profile_runs_every_stage(production_llm, stand_ins, tmp_path):
    songs = tmp_path / "songs"
    songs.mkdir()
    examples = Path(str(files("mfpipe.examples")))
    for name in ("harbor_lights.mp3", "anna_waltz.flac"):
        shutil.copy(examples / name, songs / name)
    out = tmp_path / "out"
    proc = run_mfpipe("run", "--profile", "production", "--stage", "all", "--input", str(songs), "--output", str(out),
                      "--set", f"llm.base_url={production_llm.base_url}",
                      # What the local Ray declares: one H200 and the CPUs of a GPU node (Ray counts them, the
                      # two cores here do the work); a rehearsal, so the GPU stages may run on the CPU.
                      "--set", "run.num_gpus=1", "--set", "run.num_cpus=16", "--set", "run.gpu_memory_gb=141",
                      "--set", "run.cpu_rehearsal=true",
                      # The caption floor (270 words) is set for gpt-oss-120b; the 135M stand-in often writes
                      # less, and a song rejected there reaches no later stage. The floor's reject is tested
                      # in tests/stages/test_synthesize_stage.py, its pass by the cpu-profile e2e runs.
                      "--set", "synthesize.caption_min_ratio=0",
                      *[arg for s in stand_ins for arg in ("--set", s)],
                      env={**os.environ, "MFPIPE_PROGRESS": "0", "MFPIPE_LLM_API_KEY": API_KEY}, timeout=1800)
    text = " ".join(proc.stderr.split())
    assert "profile production" in text and "rehearsal on the CPU" in text
    # The plan counted bytes: each GPU stage's share is its models' need over the declared 141 GiB.
    assert "1 GPU of 141 GiB each (run.gpu_memory_gb)" in text
    assert re.search(r"caption \dx\([\d.]+ CPU, 0\.0\d GPU = [\d.]+ GiB(, grows to \d+)?\)", text), text[-3000:]
    assert API_KEY not in proc.stderr and API_KEY not in proc.stdout
    for stage in STAGES:
        rows = read_dir(out / stage)
        # think: an item MIR confirms survives the filter, and a stand-in's chain for it may be dropped (a
        # rejects row per chain, and no row when every chain of the song went)
        dropped = read_dir(out / "rejects" / stage) if stage == "think" else []
        assert len(rows) + len(dropped) >= 1, f"{stage} wrote no rows:\n{proc.stderr[-4000:]}"
    summary = json.loads(next((out / "_runs").glob("*/summary.json")).read_text())
    assert summary["profile"] == "production" and summary["status"] == "ok"
    assert summary["plan"]["gpus"] == 1.0 and summary["plan"]["gpu_memory_gib"] == 141
    for saved in (out / "_runs").rglob("*"):  # the key never lands in what a run saves
        assert saved.is_dir() or API_KEY not in saved.read_text(errors="replace")
    # The requests went out under the name the manifest serves.
    synth = read_dir(out / "synthesize")
    assert all(m["name"] == "openai/gpt-oss-120b" for p in synth["provenance"] for m in p["models"])
    assert API_KEY not in synth["provenance"].to_json()
    assert (out / "export" / "README.md").is_file()
    # The lyrics stage ran the production path: a separated stem, voice regions, a language.
    lyrics = read_dir(out / "lyrics")
    assert lyrics["separated"].all()
    roles = {m["role"] for p in lyrics["provenance"] for m in p["models"]}
    assert {"vocal_separator", "voice_activity", "language_id", "lyrics_asr", "lyrics_asr_fallback"} <= roles
    assert (read_dir(out / "mir")["sections"].map(len) > 0).all()  # the measured form
