"""What `mfpipe submit` sends, how it authenticates, which cluster `mfpipe run` joins (no cluster needed)."""

from __future__ import annotations

import shlex

import pytest
import yaml

from mfpipe.pipeline.config import RunConfig, load_config
from mfpipe.pipeline.ray_runtime import cluster_address
from mfpipe.pipeline.submit import CLUSTER_LLM_URL, CONFIG_NAME, SubmitError, auth_headers, dashboard_address, prepare


def test_entrypoint_runs_the_shipped_config(tmp_path):
    user = tmp_path / "my.yaml"
    user.write_text(yaml.safe_dump({"ingest": {"silence_dbfs": -70}}))
    sub = prepare(["run", "--stage", "ingest", "--input", "s3://b/songs", "--output=s3://b/out",
                   "--set", "run.shard_max_rows=50", "--limit", "3"], str(user), job_id="job-1")
    argv = shlex.split(sub.entrypoint)
    assert argv == ["mfpipe", "run", "--config", CONFIG_NAME, "--stage", "ingest", "--input", "s3://b/songs",
                    "--output=s3://b/out", "--limit", "3"]
    assert sub.job_id == "job-1"
    # --config and --set are folded into the shipped file; auto asks the cluster (here: none to ask,
    # so it assumes GPUs and says so); production's LLM is the Service of infra/vllm.
    assert sub.config.ingest.silence_dbfs == -70 and sub.config.run.shard_max_rows == 50
    assert sub.config.profile == "production" and any("assumed" in n for n in sub.notes)
    assert sub.config.llm.base_url == CLUSTER_LLM_URL
    expected = load_config(str(user), ["run.shard_max_rows=50", "profile=production",
                                       f"llm.base_url={CLUSTER_LLM_URL}"])
    assert sub.config.content_hash() == expected.content_hash()
    cpu = prepare(["run", "-c", str(user), "-o", "/shared/out"], None, profile="cpu").config
    assert cpu.profile == "cpu" and cpu.llm.base_url is None  # its tiny LLM is served by the job itself
    started = prepare(["run", "-o", "/shared/out"], None, profile="production", llm="start").config
    assert started.llm.base_url is None


@pytest.mark.parametrize("args, message", [
    (["--stage", "ingest"], "after `--`"),
    (["run", "--output", "out"], "relative path"),
    (["run", "--input", "songs", "--output", "/shared/out"], "relative path"),
    (["run", "--input", "/shared/songs"], "give the job an --output"),
    (["run", "--stage", "nope", "--output", "/shared/out"], "unknown stage"),
    (["run", "--set", "ingest.nope=1", "--output", "/shared/out"], "unknown config key"),
])
def test_bad_submissions_say_why(args, message):
    with pytest.raises(SubmitError, match=message):
        prepare(args, None)


def test_config_given_twice_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("{}")
    with pytest.raises(SubmitError, match="config file once"):
        prepare(["run", "--config", str(f), "--output", "/o"], str(f))


def test_token_lookup_follows_ray(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    assert auth_headers() == {}
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(SubmitError, match="no Ray auth token"):
        auth_headers()
    token_file = tmp_path / "tok"
    token_file.write_text("from-file-0123")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert auth_headers() == {"Authorization": "Bearer from-file-0123"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env-4567")  # Ray's order: the variable wins
    assert auth_headers() == {"Authorization": "Bearer from-env-4567"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert auth_headers() == {}
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(SubmitError, match="missing") as err:
        auth_headers()
    assert "from-" not in str(err.value)


def test_dashboard_address_order(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(SubmitError, match="--address"):
        dashboard_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://b:8265")
    assert dashboard_address(None) == "http://b:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://a:8265/")
    assert dashboard_address(None) == "http://a:8265"
    assert dashboard_address("http://given:8265") == "http://given:8265"


def test_which_cluster_a_run_joins(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(RunConfig()) is None  # a fresh local instance, never discovery
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # set by Ray for a job's driver
    assert cluster_address(RunConfig()) == "10.0.0.5:6379"
    assert cluster_address(RunConfig(ray_address="head:6379")) == "head:6379"
    assert cluster_address(RunConfig(ray_address="head:6379"), "other:6379") == "other:6379"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")  # a dashboard, for `mfpipe submit`
    assert cluster_address(RunConfig()) is None


def test_a_stopped_job_has_time_to_drain():
    sub = prepare(["run", "-o", "/shared/out", "--set", "run.drain_seconds=25"], None, profile="cpu")
    env = sub.runtime_env("/tmp/job")["env_vars"]
    assert float(env["RAY_JOB_STOP_WAIT_TIME_S"]) > 25  # Ray's SIGKILL comes after the drain deadline
