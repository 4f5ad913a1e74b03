"""ONE real vLLM CPU server (SmolLM2-135M-Instruct, the cpu-profile LLM) per test session,
shared by every test folder that asks for the `llm_server` fixture (registered as a pytest
plugin from tests/conftest.py). Starting one costs 30-75 s, so no folder starts its own.

Set MFPIPE_TEST_LLM_URL (e.g. http://127.0.0.1:8000/v1) to use a server that is already running
(the cpu-profile model under the cpu-profile name) instead of starting one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from mfpipe.backends.vllm_server import VllmServer, resolve_python
from mfpipe.localmodels import model_path
from mfpipe.pipeline.config import load_config


@dataclass
class Server:
    base_url: str  # .../v1
    process: VllmServer | None = None  # None: a server given by MFPIPE_TEST_LLM_URL (not ours to stop)

    @property
    def root_url(self) -> str:
        return self.base_url.rsplit("/v1", 1)[0]

    def stop(self) -> None:
        self.process.stop()

    def start(self) -> None:
        """Start it again, on the same port (clients keep their URL)."""
        if not self.process.running():
            self.process.start()

    ensure_running = start


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory):
    """The session's real vLLM server, started by mfpipe's own server code."""
    url = os.environ.get("MFPIPE_TEST_LLM_URL")
    if url:
        yield Server(url.rstrip("/"))
        return
    cfg = load_config(None, ["profile=cpu"])
    python = resolve_python(cfg.llm.server.python)
    if not python.exists():
        pytest.skip(f"no vLLM environment at {python} (scripts/install.sh makes it unless MFPIPE_SKIP_VLLM=1)")
    assert model_path(cfg.llm.server.local_model).is_dir(), "run `mfpipe models prepare` (scripts/install.sh does)"
    server = VllmServer.from_config(cfg.llm)
    server.log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    server.start()
    try:
        yield Server(server.base_url, server)
    finally:
        server.stop()


@pytest.fixture
def restartable_llm(llm_server):
    """The session's server, for a test that stops and starts it; running again afterwards."""
    if llm_server.process is None:
        pytest.skip("the server given by MFPIPE_TEST_LLM_URL is not ours to stop")
    try:
        yield llm_server
    finally:
        llm_server.ensure_running()
