"""The runner on real Ray: DAG order, upstream joins, per-row failures, the GPU guard."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mfpipe.pipeline import registry
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.inputs import discover
from mfpipe.pipeline.plan import PlanError
from mfpipe.pipeline.runner import Runner
from mfpipe.pipeline.stage import RunInfo
from mfpipe.schemas import Reject
from support import toy_stages
from support.helpers import read_dir, run_mfpipe, tone_song

# Ray's workers start from the driver's environment: let them import the toy stages too.
pytestmark = pytest.mark.usefixtures("toys_on_path")


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("songs")
    for i, seconds in enumerate([2.0, 4.0, 6.0, 8.0]):
        tone_song(folder / f"s{i}.wav", seconds, seed=i)
    return folder


def _run(stages, songs, out, *overrides, limit=None):
    cfg = load_config(None, ["profile=cpu", "ingest.resources.batch_size=2", *overrides])
    runner = Runner(cfg, str(out), limit=limit)
    try:
        return runner.execute(stages, discover(str(songs), cfg.ingest.extensions))
    finally:
        runner.close()


def test_plan_orders_the_dag_and_pulls_in_required_stages():
    assert registry.plan("toy_reader") == ["ingest", "toy_reader"]  # `uses` is optional
    order = registry.topological({"toy_reader", "toy_double", "ingest"})
    assert order.index("toy_double") < order.index("toy_reader")
    with pytest.raises(registry.StageError, match="unknown stage 'nope'"):
        registry.plan("nope")


@pytest.mark.slow
def test_upstream_output_is_joined_and_nested(songs, tmp_path):
    result = _run(["ingest", "toy_double", "toy_reader"], songs, tmp_path)
    assert result.ok, result.stages
    rows = read_dir(tmp_path / "toy_reader")
    assert len(rows) == 4
    assert (rows["from_upstream"] == 2 * rows["duration_s"]).all()


@pytest.mark.slow
def test_failing_rows_become_rejects_and_the_rest_goes_on(songs, tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_FAIL_BELOW", "5")
    result = _run(["ingest", "toy_double"], songs, tmp_path)
    double = next(s for s in result.stages if s.stage == "toy_double")
    assert (double.rows_in, double.rows_out, double.rejected) == (4, 2, 2)
    rejects = read_dir(tmp_path / "rejects" / "toy_double")
    assert set(rejects["error"]) == {"exception"}
    assert rejects["message"].str.contains("ValueError: refusing").all()
    assert rejects["retryable"].all()
    # Retryable rejects are tried again on the next run; with the fault gone they succeed.
    monkeypatch.setenv("TOY_FAIL_BELOW", "0")
    again = _run(["toy_double"], songs, tmp_path)
    assert (again.stages[0].rows_in, again.stages[0].rows_out, again.stages[0].skipped) == (2, 2, 2)
    assert len(read_dir(tmp_path / "toy_double")) == 4


def test_process_safely_isolates_the_bad_row(monkeypatch):
    monkeypatch.setenv("TOY_FAIL_BELOW", "3")
    cfg = load_config(None, ["profile=cpu"])
    stage = toy_stages.DoubleStage.from_config(cfg, RunInfo(run_id="r", config_hash="h"))
    rows = [{"song_id": f"id{i}", "source": f"s{i}", "duration_s": d} for i, d in enumerate([1.0, 5.0, 7.0])]
    results = stage.process_safely(rows)
    assert [type(r).__name__ for r in results] == ["Reject", "DoubledRecord", "DoubledRecord"]

    class Forgetful(toy_stages.DoubleStage):
        def process_batch(self, rows):
            return super().process_batch(rows)[:-1]  # a buggy stage that drops a row

    monkeypatch.setenv("TOY_FAIL_BELOW", "0")
    results = Forgetful.from_config(cfg, RunInfo(run_id="r", config_hash="h")).process_safely(rows[1:])
    lost = [r for r in results if isinstance(r, Reject)]
    assert len(results) == 2 and lost[0].error == "lost" and lost[0].song_id == "id2"


@pytest.mark.slow
def test_gpu_guard_fails_at_once_with_a_clear_message(songs, tmp_path):
    started = time.time()
    proc = run_mfpipe("run", "--stage", "ingest", "--input", str(songs), "--output", str(tmp_path),
                      "--set", "profile=cpu", "--set", "ingest.resources.gpus=1", check=False, timeout=180)
    assert proc.returncode == 2
    assert "needs 1 GPU(s) per worker, but the Ray cluster has no GPUs" in " ".join(proc.stderr.split())
    assert time.time() - started < 120
    with pytest.raises(PlanError, match="no node of the Ray cluster has more than"):
        _run(["ingest"], songs, tmp_path / "b", "ingest.resources.cpus=64")


# Run in a child process with a deadline: without the guard the run never ends (Ray retries the
# crashed batch forever), and that must fail the test, not stall the suite.
CRASH_RUN = """
import sys
from support import toy_stages
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.inputs import discover
from mfpipe.pipeline.runner import Runner
songs, out = sys.argv[1:]
cfg = load_config(None, ["profile=cpu", "ingest.resources.batch_size=2"])
runner = Runner(cfg, out)
try:
    result = runner.execute(["ingest", "toy_crash"], discover(songs, cfg.ingest.extensions))
finally:
    runner.close()
crash = next(s for s in result.stages if s.stage == "toy_crash")
print("RESULT", crash.rows_in, crash.rows_out, crash.rejected)
"""


@pytest.mark.slow
def test_a_song_that_kills_its_worker_is_rejected_and_the_run_goes_on(songs, tmp_path):
    """A segfault raises nothing: without the in-flight marks Ray would retry that batch forever."""
    env = {**os.environ, "TOY_CRASH_BELOW": "3"}  # only the 2 s song (PYTHONPATH from toys_on_path)
    proc = subprocess.run([sys.executable, "-c", CRASH_RUN, str(songs), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT 4 3 1" in proc.stdout
    rejects = read_dir(tmp_path / "rejects" / "toy_crash")
    assert list(rejects["error"]) == ["worker_crash"]
    assert rejects["source"].iloc[0].endswith("s0.wav")


@pytest.mark.slow
def test_a_song_whose_worker_dies_once_is_retried_not_rejected(songs, tmp_path):
    """A worker killed once under a song (the OOM killer, a node agent) is no verdict on the song: it goes
    again alone and is written; only a second death while alone makes a `worker_crash` reject."""
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "TOY_CRASH_BELOW": "3", "TOY_CRASH_ONCE_DIR": str(marks)}
    proc = subprocess.run([sys.executable, "-c", CRASH_RUN, str(songs), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT 4 4 0" in proc.stdout and len(list(marks.iterdir())) == 1  # it did die, once
    assert read_dir(tmp_path / "out" / "rejects" / "toy_crash").empty
