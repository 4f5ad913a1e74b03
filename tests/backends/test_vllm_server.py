"""Server lifecycle paths that need no model: clear errors when the server cannot start.
(The real start, health wait and stop run in the session fixture and the end-to-end test.)"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from mfpipe.backends.vllm_server import ServerStartError, VllmServer, resolve_python, with_flag
from mfpipe.pipeline.llm_service import LlmService
from support.llm_data import cpu_config


def test_a_missing_python_is_a_clear_error(tmp_path):
    server = VllmServer(python=tmp_path / "no-such-python", model="m", served_name="m")
    with pytest.raises(ServerStartError, match="no Python at"):
        server.start()


def test_a_server_that_exits_while_starting_reports_its_log(tmp_path):
    # The pipeline's own Python has no vLLM: the launcher dies at once, and the error says why.
    server = VllmServer(python=sys.executable, model="m", served_name="m", startup_timeout_s=60,
                        log_file=str(tmp_path / "server.log"))
    started = time.monotonic()
    with pytest.raises(ServerStartError, match="exited") as info:
        server.start()
    assert "vllm" in str(info.value)
    assert time.monotonic() - started < 30
    assert not server.running()


def test_a_local_model_that_is_not_built_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MFPIPE_MODELS", str(tmp_path))
    with pytest.raises(ServerStartError, match="models prepare"):
        VllmServer.from_config(cpu_config().llm)


def test_an_unreachable_base_url_is_a_clear_error_before_anything_starts():
    config = cpu_config("llm.base_url=http://127.0.0.1:9/v1")
    problem = LlmService.check_endpoint(config.llm)
    assert problem.startswith("cannot reach the LLM server at http://127.0.0.1:9/v1") and "llm.base_url" in problem


def test_the_plan_sets_the_servers_memory_fraction_once():
    args = with_flag(["--gpu-memory-utilization=0.90", "--max-model-len", "4096", "--gpu-memory-utilization", "0.8"],
                     "--gpu-memory-utilization", "0.460")
    assert args == ["--max-model-len", "4096", "--gpu-memory-utilization=0.460"]


def test_the_command_serves_the_model_under_its_configured_name(monkeypatch, tmp_path):
    folder = tmp_path / "smollm2-135m-instruct"
    folder.mkdir()
    monkeypatch.setenv("MFPIPE_MODELS", str(tmp_path))
    server = VllmServer.from_config(cpu_config("llm.server.port=8123").llm)
    cmd = server.command()
    assert cmd[cmd.index("--model") + 1] == str(folder)
    assert cmd[cmd.index("--served-model-name") + 1] == "smollm2-135m-instruct"
    assert cmd[cmd.index("--port") + 1] == "8123"
    assert "--enforce-eager" in cmd
    assert server.base_url == "http://127.0.0.1:8123/v1"


def test_relative_python_keeps_the_venv_link():
    path = resolve_python(".venv/bin/python")
    assert path.is_absolute() and path.parts[-3:] == (".venv", "bin", "python")
    assert Path(path).parent.name == "bin"
