"""The GPU plan on a real local Ray that declares GPUs this machine lacks (1 and 4): every stage runs,
no GPU is ever oversubscribed, nothing deadlocks."""

from __future__ import annotations

import re

import pytest

from support.helpers import read_dir, run_mfpipe, tone_song

GPU_STAGES = ("toy_gpu_a", "toy_gpu_b", "toy_gpu_c")


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("songs")
    for i in range(6):
        tone_song(folder / f"s{i}.wav", 2.0 + i, seed=i)
    return folder


def _in_use_at_once(rows) -> float:
    """The most GPU share that was held at one moment, over every worker's batch intervals."""
    rows = list(rows)
    events = sorted([(r.started, r.gpus) for r in rows] + [(r.ended, -r.gpus) for r in rows],
                    key=lambda e: (e[0], e[1]))
    held = peak = 0.0
    for _, delta in events:
        held += delta
        peak = max(peak, held)
    return peak


@pytest.mark.slow
@pytest.mark.parametrize("gpus", [1, 4])
def test_gpu_stages_share_fake_gpus_without_oversubscription(songs, tmp_path, gpus, toy_env):
    out = tmp_path / "out"
    proc = run_mfpipe("run", "--stage", "toy_gpu_c", "--input", str(songs), "--output", str(out),
                      "--profile", "cpu", "--set", f"run.num_gpus={gpus}", "--set", "ingest.resources.batch_size=1",
                      *[f"--set={s}.resources.gpus={g}" for s, g in
                        (("toy_gpu_a", 0.5), ("toy_gpu_b", 0.5), ("toy_gpu_c", 1))],
                      *[f"--set={s}.resources.batch_size=1" for s in GPU_STAGES],
                      "--set", "toy_gpu_a.resources.cpus=0.1", "--set", "toy_gpu_b.resources.cpus=0.1",
                      "--set", "toy_gpu_c.resources.cpus=0.1", env=toy_env, timeout=300)
    import pandas as pd

    rows = pd.concat([read_dir(out / s) for s in GPU_STAGES])
    assert len(rows) == 3 * 6  # every stage ran every song
    assert _in_use_at_once(rows.itertuples()) <= gpus + 1e-9
    assert all(len(ids) >= 1 for ids in rows["gpu_ids"])  # Ray assigned each worker a GPU
    phases = [line for line in proc.stderr.splitlines() if line.strip().startswith("phase")]
    if gpus == 1:
        # a + b (half a GPU each) fill the GPU; c needs all of it: a phase of its own, after them
        assert len(phases) == 2 and "toy_gpu_c" in phases[1]
        c = read_dir(out / "toy_gpu_c")
        assert c["started"].min() >= max(read_dir(out / s)["ended"].max() for s in ("toy_gpu_a", "toy_gpu_b"))
    else:
        assert len(phases) == 1  # everything fits: one phase, songs stream through


@pytest.mark.slow
def test_declared_gpu_memory_sizes_the_shares_in_bytes(songs, tmp_path, toy_env):
    """One declared 80 GiB GPU; the toys declare their GPU memory. As shares (0.5 + 0.5 + 1) they would
    need two phases; in bytes (20 + 20 + 30 GiB) they stream together, and Ray never holds more than the
    GPU at once."""
    import json

    out = tmp_path / "out"
    memory = (("toy_gpu_a", 20), ("toy_gpu_b", 20), ("toy_gpu_c", 30))
    proc = run_mfpipe("run", "--stage", "toy_gpu_c", "--input", str(songs), "--output", str(out),
                      "--profile", "cpu", "--set", "run.num_gpus=1", "--set", "run.gpu_memory_gb=80",
                      "--set", "ingest.resources.batch_size=1",
                      *[f"--set={s}.resources.gpus={g}" for s, g in
                        (("toy_gpu_a", 0.5), ("toy_gpu_b", 0.5), ("toy_gpu_c", 1))],
                      *[f"--set={s}.resources.gpu_memory_gb={gib}" for s, gib in memory],
                      *[f"--set={s}.resources.batch_size=1" for s in GPU_STAGES],
                      *[f"--set={s}.resources.cpus=0.1" for s in GPU_STAGES], env=toy_env, timeout=300)
    import pandas as pd

    rows = pd.concat([read_dir(out / s) for s in GPU_STAGES])
    assert len(rows) == 3 * 6
    assert _in_use_at_once(rows.itertuples()) <= 1 + 1e-9
    text = " ".join(proc.stderr.split())  # rich wraps long lines
    assert re.findall(r"phase \d+:", text) == ["phase 1:"], text[-2000:]
    assert "80 GiB each (run.gpu_memory_gb)" in text
    plan = json.loads(next((out / "_runs").glob("*/summary.json")).read_text())["plan"]
    assert plan["gpu_memory_gib"] == 80
    assert {s: plan["stages"][s]["gpus"] for s, _ in memory} == {"toy_gpu_a": 0.25, "toy_gpu_b": 0.25,
                                                                  "toy_gpu_c": 0.38}
