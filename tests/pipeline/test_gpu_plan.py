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


def _at_once(rows, weight=lambda row: row.gpus) -> float:
    """The most held at one moment over the rows' batch intervals: GPU share by default (weight 1: batches)."""
    rows = list(rows)
    events = sorted([(r.started, weight(r)) for r in rows] + [(r.ended, -weight(r)) for r in rows],
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
    assert _at_once(rows.itertuples()) <= gpus + 1e-9
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
    assert _at_once(rows.itertuples()) <= 1 + 1e-9
    text = " ".join(proc.stderr.split())  # rich wraps long lines
    assert re.findall(r"phase \d+:", text) == ["phase 1:"], text[-2000:]
    assert "80 GiB each (run.gpu_memory_gb)" in text
    plan = json.loads(next((out / "_runs").glob("*/summary.json")).read_text())["plan"]
    assert plan["gpu_memory_gib"] == 80
    assert {s: plan["stages"][s]["gpus"] for s, _ in memory} == {"toy_gpu_a": 0.25, "toy_gpu_b": 0.25,
                                                                  "toy_gpu_c": 0.38}


@pytest.mark.slow
def test_an_elastic_pool_grows_into_a_starved_neighbours_share_and_gives_it_back(songs, tmp_path, toy_env):
    """One declared GPU, half each: toy_gpu_b has six slow songs; toy_gpu_late waits behind a slow upstream
    (toy_late). While it starves, its idle worker goes and b grows into its half (two b batches at once);
    when its songs arrive it is owed its share, b gives a worker back, and late runs before b is done. Ray
    never holds more than the GPU; the rows are those of the barrier schedule; every song's cost row adds
    up to the stage's busy time x its GPU share."""
    import json

    import pandas as pd

    common = ["--input", str(songs), "--profile", "cpu", "--set", "run.num_gpus=1", "--set", "run.pool_idle_s=0.5",
              "--set", "ingest.resources.batch_size=1", "--set", "toy_late.resources.batch_size=6",
              "--set", "toy_late.resources.cpus=0.1", "--set", "toy_both.resources.cpus=0.1",
              *[f"--set={s}.resources.{k}={v}" for s in ("toy_gpu_b", "toy_gpu_late")
                for k, v in (("gpus", 0.5), ("batch_size", 1), ("cpus", 0.1))]]
    env = {**toy_env, "TOY_GPU_HOLD_S": "2.5", "TOY_LATE_S": "3"}
    out = tmp_path / "stream"
    proc = run_mfpipe("run", "--stage", "toy_both", "--output", str(out), *common, env=env, timeout=400)
    b, late = read_dir(out / "toy_gpu_b"), read_dir(out / "toy_gpu_late")
    assert len(b) == 6 and len(late) == 6
    text = " ".join(proc.stderr.split())
    assert re.search(r"toy_gpu_b 1x\([\d.]+ CPU, 0.5 GPU, grows to 2\)", text), text[-2000:]
    assert _at_once(b.itertuples(), lambda row: 1) == 2  # grew into the starved neighbour's half
    assert late["started"].min() < b["ended"].max()  # ...and gave it back: late ran before b was done
    both = pd.concat([b, late])
    assert _at_once(both.itertuples()) <= 1 + 1e-9  # never more than the one GPU
    summary = json.loads(next((out / "_runs").glob("*/summary.json")).read_text())
    stages = {s["stage"]: s for s in summary["summary"]}
    changes = "\n".join(f"{s}: {stages[s]['pool_changes']}" for s in stages)
    assert stages["toy_gpu_b"]["workers"] == 2 and stages["toy_gpu_b"]["model_loads"] == 2, changes
    # Costs: one row per song; GPU-seconds = the GPU share x the busy time; wall sums to the busy time.
    costs = read_dir(out / "_costs" / "toy_gpu_b")
    assert len(costs) == 6 and set(costs["song_id"]) == set(b["song_id"])
    assert costs["gpu_s"].sum() == pytest.approx(0.5 * stages["toy_gpu_b"]["busy_seconds"], rel=1e-3)
    assert costs["wall_s"].sum() == pytest.approx(stages["toy_gpu_b"]["busy_seconds"], rel=1e-3)
    assert costs["model_load_s"].sum() == pytest.approx(stages["toy_gpu_b"]["model_load_seconds"], abs=1e-2)
    # A corpus projected from these costs: arithmetic on the measured per-song means.
    planned = run_mfpipe("plan", str(out), "--songs", "3600", "--gpus", "2", "--cpus", "8").stdout
    gpu_hours = sum(read_dir(out / "_costs" / s)["gpu_s"].mean() for s in ("toy_gpu_b", "toy_gpu_late"))
    assert f"GPU-hours: {gpu_hours:,.2f}" in " ".join(planned.split()), planned
    assert "bound by GPUs: toy_gpu_" in " ".join(planned.split())
    # The same rows as the barrier schedule makes.
    barrier = tmp_path / "barrier"
    run_mfpipe("run", "--stage", "toy_both", "--output", str(barrier), *common, "--set", "run.schedule=barrier",
               env=env, timeout=400)
    for stage in ("toy_late", "toy_gpu_b", "toy_gpu_late"):
        assert set(read_dir(out / stage)["song_id"]) == set(read_dir(barrier / stage)["song_id"])
