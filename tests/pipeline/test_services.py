"""A vLLM server mfpipe starts lives in a Ray actor that holds its GPU share: Ray's accounting shows it,
its memory fraction follows the share, and a server that dies is started again by `recover`.
(Real Ray with a declared GPU; the real vLLM CPU build, which takes the flags and ignores the device.)"""

from __future__ import annotations

import os
import time

import psutil
import pytest

from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.plan import ServerPlan
from mfpipe.pipeline.services import Services

pytestmark = pytest.mark.slow


def _server_process(base_url: str) -> psutil.Process:
    """The server behind `base_url`, found by its port: a session-wide test server of the same
    model may run beside it."""
    port = base_url.rsplit(":", 1)[1].split("/", 1)[0]
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "--served-model-name" in cmd and "--port" in cmd and cmd[cmd.index("--port") + 1] == port:
            return proc
    raise AssertionError(f"no vLLM server process on port {port}")


def test_the_servers_actor_holds_its_gpu_share_and_a_dead_server_comes_back(tmp_path):
    import ray

    cfg = load_config(None, ["profile=cpu", f"llm.server.log_file={tmp_path / 'vllm.log'}"])
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False)
    services = Services(server_plan=ServerPlan(gpus=0.5, cpus=0.5, gpu_memory_utilization=0.46))
    try:
        llm = services.llm("think", cfg.llm)
        assert llm.base_url and services.check("think") is None
        assert ray.available_resources().get("GPU", 0.0) == pytest.approx(0.5)  # the actor holds its share
        server = _server_process(llm.base_url)
        assert "--gpu-memory-utilization=0.460" in server.cmdline()  # the fraction follows the share
        environ = dict(v.split("=", 1) for v in open(f"/proc/{server.pid}/environ").read().split("\0") if "=" in v)
        assert environ.get("CUDA_VISIBLE_DEVICES") == "0"  # the GPU Ray gave the actor
        os.killpg(os.getpgid(server.pid), 9)
        time.sleep(2)
        assert "has died" in services.check("think")
        assert services.recover("think") and services.check("think") is None
    finally:
        services.close()
        time.sleep(1)
        assert ray.available_resources().get("GPU", 0.0) == pytest.approx(1.0)  # released with the server
        ray.shutdown()
