"""A vLLM server mfpipe starts lives in a Ray actor that holds its GPU share: Ray's accounting shows it,
its memory fraction follows the share, a server other hosts can reach asks for a key (made for the run,
handed to the workers, never on a command line), and a server that dies is started again by `recover`.
(Real Ray with a declared GPU; the real vLLM CPU build, which takes the flags and ignores the device.)"""

from __future__ import annotations

import os
import time

import httpx
import psutil
import pytest

from mfpipe.pipeline import registry
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.plan import ServicePlan
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
    # Two nodes: the server binds every interface, so it must ask for a key (made for this run).
    services = Services(nodes=2)
    services.plans = {"llm": ServicePlan(gpus=0.5, cpus=0.5, gpu_memory_utilization=0.46)}
    os.environ.pop(cfg.llm.api_key_env, None)
    think = registry.stages()["think"]
    try:
        llm = services.open(think, think.settings_from(cfg)).shared["llm"]  # the stage declares the service
        assert llm.base_url and services.check("think") is None
        assert ray.available_resources().get("GPU", 0.0) == pytest.approx(0.5)  # the actor holds its share
        server = _server_process(llm.base_url)
        assert "--gpu-memory-utilization=0.460" in server.cmdline()  # the fraction follows the share
        environ = dict(v.split("=", 1) for v in open(f"/proc/{server.pid}/environ").read().split("\0") if "=" in v)
        assert environ.get("CUDA_VISIBLE_DEVICES") == "0"  # the GPU Ray gave the actor
        key = services.worker_env()[cfg.llm.api_key_env]  # what the stage workers get
        assert environ["VLLM_API_KEY"] == key and len(key) >= 32
        assert "--host" in server.cmdline() and "0.0.0.0" in server.cmdline()
        assert not any(key in arg for arg in server.cmdline())  # never on the command line
        assert httpx.get(f"{llm.base_url}/models", timeout=10).status_code == 401
        assert httpx.get(f"{llm.base_url}/models", headers={"Authorization": f"Bearer {key}"},
                         timeout=10).status_code == 200
        assert key not in cfg.to_yaml() and key not in llm.model_dump_json()
        os.killpg(os.getpgid(server.pid), 9)
        time.sleep(2)
        assert "has died" in services.check("think")
        assert services.recover("think") and services.check("think") is None
    finally:
        services.close()
        time.sleep(1)
        assert ray.available_resources().get("GPU", 0.0) == pytest.approx(1.0)  # released with the server
        assert cfg.llm.api_key_env not in os.environ  # the run's key ended with it
        ray.shutdown()
