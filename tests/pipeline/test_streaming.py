"""Songs stream between stages: a downstream stage starts on finished songs, not on a finished stage.
The output is the same as under the barrier schedule, a kill -9 and a rerun give it too, and a song
rejected upstream stalls nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from support.fixtures_toys import TOY_SONGS
from support.helpers import MFPIPE, read_dir, run_mfpipe

pytestmark = pytest.mark.slow

N = TOY_SONGS
STAGES = ["ingest", "toy_double", "toy_need", "toy_reader", "toy_sink"]
COMMON = ["--profile", "cpu", "--set", "run.flush_seconds=1", *[f"--set={s}.resources.batch_size=1" for s in STAGES]]


def _args(toy_songs, out, *extra):
    return ["run", "--stage", "toy_sink", "--input", str(toy_songs), "--output", str(out), *COMMON, *extra]


def _facts(out) -> dict:
    """Per stage: the songs written, the (song, error) rejected."""
    facts = {}
    for stage in STAGES:
        rows = read_dir(out / stage)
        rejects = read_dir(out / "rejects" / stage)
        facts[stage] = (sorted(rows["song_id"]) if len(rows) else [],
                        sorted(zip(rejects["source"], rejects["error"])) if len(rejects) else [])
    return facts


def _summary(out) -> dict[str, dict]:
    runs = sorted((out / "_runs").glob("*/summary.json"))
    return {s["stage"]: s for s in json.loads(runs[-1].read_text())["summary"]}


@pytest.fixture(scope="module")
def barrier(toy_songs, tmp_path_factory, toy_env):
    out = tmp_path_factory.mktemp("barrier") / "out"
    run_mfpipe(*_args(toy_songs, out, "--set", "run.schedule=barrier"), env={**toy_env, "TOY_FAIL_BELOW": "4"})
    return out


def test_a_streamed_run_equals_a_barrier_run_and_streams(toy_songs, tmp_path, toy_env, barrier):
    out = tmp_path / "out"
    run_mfpipe(*_args(toy_songs, out), env={**toy_env, "TOY_FAIL_BELOW": "4", "TOY_SLOW_S": "1.5"})
    assert _facts(out) == _facts(barrier)
    facts = _facts(out)
    assert len(facts["toy_double"][0]) == N - 2 and len(facts["toy_double"][1]) == 2  # the 2 s and 3 s songs
    assert len(facts["toy_reader"][0]) == N  # an optional upstream's rejects do not hold it back
    assert len(facts["toy_sink"][0]) == N - 2
    summary = _summary(out)
    # Downstream committed rows while toy_double was still working: songs flowed, not stages.
    assert summary["toy_sink"]["first_commit_s"] < summary["toy_double"]["finished_s"]
    barrier_summary = _summary(barrier)
    assert barrier_summary["toy_sink"]["first_commit_s"] > barrier_summary["toy_double"]["finished_s"]
    for stage in STAGES:
        assert summary[stage]["rows_out"] == barrier_summary[stage]["rows_out"]


def test_sigkill_mid_stream_then_rerun_gives_the_same_output(toy_songs, tmp_path, toy_env, barrier):
    out = tmp_path / "out"
    env = {**toy_env, "TOY_FAIL_BELOW": "4"}
    proc = subprocess.Popen([*MFPIPE, *_args(toy_songs, out)], env={**env, "TOY_SLOW_S": "1.5"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while not list((out / "toy_need").glob("part-*.parquet")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(read_dir(out / "toy_sink")) < N - 2  # it was killed mid-stream
    run_mfpipe(*_args(toy_songs, out), env=env)
    assert _facts(out) == _facts(barrier)
    for stage in STAGES:
        rows = read_dir(out / stage)
        assert rows["song_id"].is_unique


def test_a_stage_whose_upstream_rejects_everything_finishes_with_it(toy_songs, tmp_path, toy_env):
    out = tmp_path / "out"
    started = time.time()
    run_mfpipe(*_args(toy_songs, out), env={**toy_env, "TOY_FAIL_BELOW": "1000"})
    assert time.time() - started < 120
    summary = _summary(out)
    assert summary["toy_double"]["rejected"] == N
    assert summary["toy_need"]["rows_in"] == 0 and summary["toy_sink"]["rows_in"] == 0
    assert summary["toy_reader"]["rows_out"] == N and summary["toy_need"]["error"] is None
