"""Operators' contract: Ctrl-C and SIGTERM drain and commit, a second signal stops at once, the rerun
resumes exactly; `--force` touches only what it names; a retry that succeeds leaves no open reject."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from support.fixtures_toys import TOY_SONGS
from support.helpers import MFPIPE, read_dir, run_mfpipe

pytestmark = pytest.mark.slow

N = TOY_SONGS
SLOW = ["--profile", "cpu", "--set", "toy_double.resources.batch_size=1", "--set", "toy_double.resources.concurrency=1",
        "--set", "run.flush_seconds=600"]  # nothing commits on its own: what is committed, the stop committed


def _start(toy_songs: Path, out: Path, env: dict, *extra: str) -> subprocess.Popen:
    log = open(out.parent / f"{out.name}.log", "w")
    return subprocess.Popen([*MFPIPE, "run", "--stage", "toy_double", "--input", str(toy_songs), "--output", str(out),
                             *SLOW, *extra], env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_for_work(proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Until ingest has committed and the slow stage is busy on its songs."""
    deadline = time.time() + timeout
    while not list((out / "ingest").glob("part-*.parquet")):
        assert proc.poll() is None and time.time() < deadline, "the run ended or stalled before the stage began"
        time.sleep(0.3)
    time.sleep(4.0)  # a few batches of ~1.5 s each in


def _summary(out: Path) -> dict:
    (path,) = (out / "_runs").glob("*/summary.json")
    return json.loads(path.read_text())


def _ray_left(pids: list[int]) -> list[str]:
    alive = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(p.cmdline())[:120])
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_stage_drains_commits_and_the_rerun_resumes(toy_songs, tmp_path, toy_env, sig):
    out = tmp_path / "out"
    proc = _start(toy_songs, out, {**toy_env, "TOY_SLOW_S": "1.5"})
    _wait_for_work(proc, out)
    ray_pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 128 + sig
    summary = _summary(out)
    assert summary["status"] == "interrupted" and summary["interrupted_by_signal"] == sig
    double = next(s for s in summary["summary"] if s["stage"] == "toy_double")
    done = read_dir(out / "toy_double")
    assert 0 < len(done) < N  # the finished work was committed (nothing would have flushed by itself)
    assert double["pending"] == N - len(done)
    time.sleep(5)
    assert not _ray_left(ray_pids), "Ray processes outlived the run"
    again = run_mfpipe("run", "--stage", "toy_double", "--input", str(toy_songs), "--output", str(out),
                       "--profile", "cpu", env=toy_env)
    assert "toy_double" in again.stdout
    rows = read_dir(out / "toy_double")
    assert len(rows) == N and rows["song_id"].is_unique


def test_a_second_signal_stops_at_once_without_a_half_shard(toy_songs, tmp_path, toy_env):
    out = tmp_path / "out"
    proc = _start(toy_songs, out, {**toy_env, "TOY_SLOW_S": "30"}, "--set", "run.drain_seconds=120")
    _wait_for_work(proc, out)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    started = time.time()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert time.time() - started < 30  # not the 120 s drain, nor the 30 s batch
    for shard in out.rglob("*.parquet"):
        pq.read_metadata(shard)  # every shard there is whole
    assert not list(out.rglob(".tmp-*"))
    assert _summary(out)["status"] == "interrupted"


def test_force_redoes_only_the_named_stage(toy_songs, tmp_path, toy_env):
    out = tmp_path / "out"
    args = ["run", "--stage", "toy_double", "--input", str(toy_songs), "--output", str(out), "--profile", "cpu"]
    run_mfpipe(*args, env=toy_env)
    ingest = sorted(p.name for p in (out / "ingest").glob("part-*"))
    first = sorted(p.name for p in (out / "toy_double").glob("part-*"))
    run_mfpipe(*args, "--force", env=toy_env)
    assert sorted(p.name for p in (out / "ingest").glob("part-*")) == ingest  # upstream untouched
    assert sorted(p.name for p in (out / "toy_double").glob("part-*")) != first  # the named stage redone
    assert len(read_dir(out / "toy_double")) == N
    both = run_mfpipe(*args, "--force-upstream", env=toy_env)
    assert f"--force-upstream deletes ingest: {N} row(s)" in " ".join(both.stderr.split())
    assert sorted(p.name for p in (out / "ingest").glob("part-*")) != ingest


def test_a_retry_that_succeeds_leaves_no_open_reject(toy_songs, tmp_path, toy_env):
    out = tmp_path / "out"
    args = ["run", "--stage", "toy_double", "--input", str(toy_songs), "--output", str(out), "--profile", "cpu"]
    run_mfpipe(*args, env={**toy_env, "TOY_FAIL_BELOW": "4"})  # 2 s and 3 s songs fail (retryable)
    assert len(read_dir(out / "rejects" / "toy_double")) == 2
    run_mfpipe(*args, env=toy_env)
    assert len(read_dir(out / "toy_double")) == N
    assert read_dir(out / "rejects" / "toy_double").empty  # nothing open: rows + rejects = songs
    resolved = read_dir(out / "rejects" / "toy_double" / "_resolved")
    assert len(resolved) == 2 and set(resolved["resolution"]) == {"succeeded"}
