"""Runs on a real local Ray cluster: `mfpipe submit` equals a local run, locally and on s3://;
a bad job fails with a clear status; `jobs stop` stops; `run --ray-address` joins the cluster;
token auth is needed and the token never shows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mfpipe.pipeline import registry
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.inputs import bundled_examples
from mfpipe.store import COMMITTED, OutputStore
from support.helpers import run_mfpipe

pytestmark = pytest.mark.slow

EXAMPLES = bundled_examples()
SETTINGS = ["--set", "profile=cpu"]
# mir runs on the cluster's CPU workers once the stage exists in this build.
STAGES = ["ingest", "mir"] if "mir" in registry.stages() else ["ingest"]
TARGET = STAGES[-1]


def _frame(url: str, stage: str) -> pd.DataFrame:
    """A stage's committed output, one row per song, without per-run fields."""
    store = OutputStore(url)
    table = store.read(store.stage_dir(stage))
    frame = table.to_pandas().drop(columns=["provenance"])
    frame["source"] = frame["source"].map(lambda s: s.rsplit("/", 1)[-1])  # local path vs s3:// URL
    return frame.sort_values("song_id").reset_index(drop=True)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert a["song_id"].tolist() == b["song_id"].tolist()
    pd.testing.assert_frame_equal(a, b)


def _submit(cluster, *run_args: str, follow: bool = True, check: bool = True, env=None, timeout=420):
    args = ["submit", "--address", cluster.dashboard, *(["--follow"] if follow else []), "--", "run", *run_args]
    return run_mfpipe(*args, env=env or cluster.env(), check=check, timeout=timeout)


def _no_token(cluster, *procs) -> None:
    token = cluster.token_path.read_text().strip()
    for proc in procs:
        assert token not in proc.stdout and token not in proc.stderr


def _ray_actors(cluster, class_fragment: str) -> list[dict]:
    """Actors of the cluster (Ray's state API through the dashboard), as a separate client."""
    code = ("import json, sys; from ray.util.state import list_actors; "
            "print(json.dumps([{'cls': a.class_name, 'job': a.job_id} for a in "
            "list_actors(address=sys.argv[1], limit=10000, raise_on_missing_output=False)]))")
    proc = subprocess.run([sys.executable, "-c", code, cluster.dashboard], capture_output=True, text=True,
                          env=cluster.env(RAY_AUTH_MODE="token"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [a for a in json.loads(proc.stdout.strip().splitlines()[-1]) if class_fragment in a["cls"]]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    run_mfpipe("run", "--stage", TARGET, "--input", EXAMPLES, "--output", str(out), *SETTINGS)
    return {stage: _frame(str(out), stage) for stage in STAGES}


def test_submitted_run_equals_local_run(ray_cluster, local_run, tmp_path):
    out = tmp_path / "out"
    # A non-default setting that changes the config hash but not these songs' data:
    # the job must run with the config resolved here.
    extra = ["--set", "ingest.silence_dbfs=-61"]
    proc = _submit(ray_cluster, "--stage", TARGET, "--input", EXAMPLES, "--output", str(out), *SETTINGS, *extra)
    job_id = proc.stdout.splitlines()[0].strip()
    assert job_id.startswith("mfpipe-")
    assert f"job {job_id}: SUCCEEDED" in proc.stderr
    assert f"{TARGET}: 4 out" in proc.stdout  # the driver's log, streamed by --follow
    assert "ray: cluster " in proc.stdout  # the driver joined the job's cluster (RAY_ADDRESS)
    for stage in STAGES:
        _same(_frame(str(out), stage), local_run[stage])
    expected_hash = load_config(None, ["profile=cpu", "ingest.silence_dbfs=-61"]).content_hash()
    store = OutputStore(out)
    prov = store.read(store.stage_dir("ingest"), columns=["provenance"])["provenance"].to_pylist()
    assert {p["config_hash"] for p in prov} == {expected_hash}
    # The stage's workers ran on this cluster, as actors of this job (the driver joined it
    # through RAY_ADDRESS instead of starting a Ray of its own).
    status = run_mfpipe("jobs", "status", job_id, "--address", ray_cluster.dashboard, env=ray_cluster.env())
    assert "SUCCEEDED" in status.stdout and expected_hash in status.stdout
    workers = _ray_actors(ray_cluster, "StageActor")
    logs = run_mfpipe("jobs", "logs", job_id, "--address", ray_cluster.dashboard, env=ray_cluster.env())
    assert "ingest: 4 out" in logs.stdout
    listed = run_mfpipe("jobs", "list", "--address", ray_cluster.dashboard, env=ray_cluster.env())
    assert job_id in listed.stdout
    assert workers, "no ingest worker ran on the cluster"
    _no_token(ray_cluster, proc, status, logs, listed)


def test_s3_inputs_and_outputs_and_resume_through_the_cluster(ray_cluster, local_run, monkeypatch):
    import s3fs

    for key, value in ray_cluster.s3.env.items():
        monkeypatch.setenv(key, value)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("mfpipe-cluster")
    for song in sorted(Path(EXAMPLES).iterdir()):
        if song.suffix in (".flac", ".mp3", ".ogg", ".wav"):
            fs.put_file(str(song), f"mfpipe-cluster/songs/{song.name}")
    run = ["--stage", "ingest", "--input", "s3://mfpipe-cluster/songs", "--output", "s3://mfpipe-cluster/out",
           *SETTINGS]
    first = _submit(ray_cluster, *run)
    assert "SUCCEEDED" in first.stderr
    _same(_frame("s3://mfpipe-cluster/out", "ingest"), local_run["ingest"])
    # Every shard the job wrote is committed.
    shards = fs.glob("mfpipe-cluster/out/ingest/part-*.parquet")
    records = fs.glob(f"mfpipe-cluster/out/ingest/{COMMITTED}/*.json")
    assert shards and sorted(r.rsplit("/", 1)[1] for r in records) == sorted(s.rsplit("/", 1)[1] + ".json"
                                                                              for s in shards)
    assert all(s.startswith("s3://mfpipe-cluster/songs/") for s in
               OutputStore("s3://mfpipe-cluster/out").read("mfpipe-cluster/out/ingest")["source"].to_pylist())
    # Resubmitted, the job resumes from the committed shards: nothing to redo, nothing doubled.
    again = _submit(ray_cluster, *run)
    assert "ingest: 0 out, 0 rejected, 4 already done" in again.stdout
    assert fs.glob("mfpipe-cluster/out/ingest/part-*.parquet") == shards
    _no_token(ray_cluster, first, again)


def test_missing_input_fails_with_a_clear_status(ray_cluster, tmp_path):
    started = time.monotonic()
    proc = _submit(ray_cluster, "--stage", "ingest", "--input", str(tmp_path / "no-such-songs"),
                   "--output", str(tmp_path / "out"), check=False, timeout=180)
    assert proc.returncode == 1
    job_id = proc.stdout.splitlines()[0].strip()
    assert f"job {job_id}: FAILED" in proc.stderr
    assert "input not found" in proc.stdout
    assert time.monotonic() - started < 120
    status = run_mfpipe("jobs", "status", job_id, "--address", ray_cluster.dashboard, "--wait",
                        env=ray_cluster.env(), check=False)
    assert status.returncode == 1 and "FAILED" in status.stdout


def test_stop_a_job_that_waits_for_gpus(ray_cluster, tmp_path):
    # As on an autoscaling cluster whose GPU nodes have not come up: the stage waits.
    proc = _submit(ray_cluster, "--stage", "ingest", "--input", EXAMPLES, "--output", str(tmp_path / "out"),
                   *SETTINGS, "--set", "ingest.resources.gpus=1", "--set", "run.fail_fast_on_resources=false",
                   follow=False)
    job_id = proc.stdout.strip()
    env = ray_cluster.env()
    deadline = time.monotonic() + 120
    while "mfpipe profile" not in run_mfpipe("jobs", "logs", job_id, "--address", ray_cluster.dashboard,
                                             env=env).stdout:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(1)
    stop = run_mfpipe("jobs", "stop", job_id, "--address", ray_cluster.dashboard, env=env)
    assert f"job {job_id}: STOPPED" in stop.stderr
    status = run_mfpipe("jobs", "status", job_id, "--address", ray_cluster.dashboard, env=env)
    assert "STOPPED" in status.stdout
    # Ray's stop is a SIGTERM to the driver: the run drained and recorded itself as interrupted.
    (summary,) = (tmp_path / "out" / "_runs").glob("*/summary.json")
    assert json.loads(summary.read_text())["status"] == "interrupted"


def test_auto_decides_the_profile_from_the_clusters_gpus(ray_cluster, tmp_path):
    proc = run_mfpipe("run", "--stage", "ingest", "--ray-address", ray_cluster.gcs, "--input", EXAMPLES,
                      "--output", str(tmp_path / "out"), "--profile", "auto", env=ray_cluster.env())
    text = " ".join(proc.stderr.split())
    assert f"profile cpu (auto: the Ray cluster at {ray_cluster.gcs} has 0 GPU(s))" in text


def test_run_joins_the_cluster_with_ray_address(ray_cluster, local_run, tmp_path):
    before = len(_ray_actors(ray_cluster, "StageActor"))
    out = tmp_path / "out"
    proc = run_mfpipe("run", "--stage", "ingest", "--ray-address", ray_cluster.gcs, "--input", EXAMPLES,
                      "--output", str(out), *SETTINGS, env=ray_cluster.env())
    _same(_frame(str(out), "ingest"), local_run["ingest"])
    assert len(_ray_actors(ray_cluster, "StageActor")) > before
    _no_token(ray_cluster, proc)


def test_the_cluster_wants_the_token(ray_cluster, tmp_path):
    no_token = ray_cluster.env(HOME=str(tmp_path))  # no ~/.ray/auth_token either
    no_token.pop("RAY_AUTH_TOKEN_PATH")
    proc = run_mfpipe("jobs", "list", "--address", ray_cluster.dashboard, env=no_token, check=False)
    assert proc.returncode == 2 and "token auth" in proc.stderr
    wrong = run_mfpipe("jobs", "list", "--address", ray_cluster.dashboard,
                       env={**no_token, "RAY_AUTH_TOKEN": "not-the-token"}, check=False)
    assert wrong.returncode == 2 and "refused" in wrong.stderr and "not-the-token" not in wrong.stderr
