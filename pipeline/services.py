"""What stages share during a run: the LLM endpoint, and the vLLM server mfpipe starts when none is given.

- An endpoint named by `llm.base_url` (production: the vLLM Deployment of infra/vllm) is checked
  before a stage that uses it starts: it must answer `/v1/models` and list `llm.model`. A wrong URL
  or name fails the stage at once with the cause and what to set, instead of turning every song
  into a reject.
- Without `llm.base_url`, mfpipe starts `vllm serve` for the run inside a Ray actor that reserves
  the server's GPU share (`pipeline.plan`), so Ray never places a stage worker on those GPUs; its
  `--gpu-memory-utilization` follows the share. The server lives as long as the phases that need
  it; if it dies, `recover` starts it again.
- During a run a stage asks `check` when its songs come back `deferred` (the service failed for
  them): healthy means the failure was the song's, not the service's.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from ..backends import vllm_server
from ..backends.llm import LlmConfig
from .plan import ServerPlan


class ServiceError(RuntimeError):
    """A shared service a stage needs is not usable; the message says what to set."""


class _ServerHost:
    """Ray actor: holds the GPU share and runs the vLLM server process beside itself."""

    def __init__(self, llm_json: str, host: str, gpu_memory_utilization: float | None, tensor_parallel: int):
        llm = LlmConfig.model_validate_json(llm_json)
        args = list(llm.server.args)
        if gpu_memory_utilization is not None:
            args = vllm_server.with_flag(args, "--gpu-memory-utilization", f"{gpu_memory_utilization:.3f}")
        if tensor_parallel > 1:  # its own worker processes inside our share, not another Ray
            args = vllm_server.with_flag(args, "--distributed-executor-backend", "mp")
        self.server = vllm_server.VllmServer.from_config(llm, host=host, args=args)

    def start(self) -> str:
        self.server.start()
        return self.server.base_url

    def alive(self) -> bool:
        return self.server.running()

    def log(self) -> tuple[str, str]:
        return str(self.server.log_path), self.server.log_tail()

    def stop(self) -> None:
        self.server.stop()


@dataclass
class _Managed:
    key: str
    actor: Any
    base_url: str
    plan: ServerPlan


@dataclass
class Services:
    """The run's shared services, opened by the stages that need them (`Stage.open_services`)."""

    nodes: int = 1  # Ray nodes: more than one and the server binds all interfaces
    server_plan: ServerPlan | None = None  # the current phase's share for a server mfpipe starts
    _managed: dict[str, _Managed] = field(default_factory=dict)
    _by_stage: dict[str, LlmConfig] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # stages open services from their threads

    # ------------------------------------------------------------ opening
    def llm(self, stage: str, llm: LlmConfig) -> LlmConfig:
        """The LLM settings `stage`'s workers get: the checked endpoint, or a server started for it."""
        if not llm.base_url:
            with self._lock:
                managed = self._server(llm)
            llm = llm.model_copy(update={"base_url": managed.base_url})
        problem = self.check_llm(llm)
        if problem:
            raise ServiceError(problem)
        self._by_stage[stage] = llm
        return llm

    def _server(self, llm: LlmConfig) -> _Managed:
        import ray

        plan = self.server_plan or ServerPlan(gpus=0.0, cpus=1.0, gpu_memory_utilization=None)
        key = f"{llm.model_dump_json()}|{plan.gpus}"
        found = self._managed.get(key)
        if found is not None:
            return found
        host = llm.server.host
        if self.nodes > 1 and host in ("127.0.0.1", "localhost"):
            host = "0.0.0.0"  # stage workers on other nodes must reach it; it advertises its node's IP
        tp = vllm_server.tensor_parallel_size(llm.server.args)
        actor = ray.remote(_ServerHost).options(num_cpus=plan.cpus, num_gpus=plan.gpus, max_restarts=0).remote(
            llm.model_dump_json(), host, plan.gpu_memory_utilization, tp)
        share = f"{plan.gpus:g} GPU, gpu-memory-utilization {plan.gpu_memory_utilization}" if plan.gpus else "CPU"
        print(f"starting the vLLM server for {llm.model} ({share})", file=sys.stderr, flush=True)
        try:
            base_url = ray.get(actor.start.remote())
        except ray.exceptions.RayError as exc:
            ray.kill(actor)
            raise ServiceError(f"the vLLM server for {llm.model} did not start: {_cause(exc)}") from None
        managed = self._managed[key] = _Managed(key, actor, base_url, plan)
        return managed

    # ------------------------------------------------------------ health
    def check_llm(self, llm: LlmConfig) -> str | None:
        """None when the endpoint answers and serves `llm.model`; else what is wrong and what to set."""
        import httpx

        try:
            names = vllm_server.served_models(llm.base_url, os.environ.get(llm.api_key_env))
        except (httpx.HTTPError, ValueError) as exc:
            return (f"cannot reach the LLM server at {llm.base_url} ({type(exc).__name__}: {exc}). Set "
                    "llm.base_url to a running OpenAI-compatible server (infra/vllm/deployment.yaml), or leave it "
                    "unset to let mfpipe start one.")
        if llm.model not in names:
            return (f"the LLM server at {llm.base_url} does not serve {llm.model!r} (it serves: "
                    f"{', '.join(names) or 'nothing'}). Set llm.model to the served name, or serve the model "
                    f"under that name (--served-model-name {llm.model}, as infra/vllm/deployment.yaml does).")
        return None

    def check(self, stage: str) -> str | None:
        llm = self._by_stage.get(stage)
        if llm is None:
            return None
        for managed in self._managed.values():
            if managed.base_url == llm.base_url and not _alive(managed.actor):
                return f"the vLLM server mfpipe started at {llm.base_url} has died"
        return self.check_llm(llm)

    def recover(self, stage: str) -> bool:
        """Start again a server mfpipe runs that died; False when there is nothing of ours to restart."""
        import ray

        llm = self._by_stage.get(stage)
        for managed in list(self._managed.values()):
            if llm is not None and managed.base_url == llm.base_url and not _alive(managed.actor):
                with contextlib.suppress(Exception):
                    ray.get(managed.actor.stop.remote(), timeout=60)
                try:
                    managed.base_url = ray.get(managed.actor.start.remote())
                    return True
                except ray.exceptions.RayError:
                    return False
        return False

    # ------------------------------------------------------------ closing
    def release(self, keep_plan: ServerPlan | None = None) -> None:
        """Stop the servers mfpipe started, except one whose share the next phase wants again."""
        import ray

        for key, managed in list(self._managed.items()):
            if keep_plan is not None and managed.plan.gpus == keep_plan.gpus:
                continue
            with contextlib.suppress(Exception):
                ray.get(managed.actor.stop.remote(), timeout=120)
            with contextlib.suppress(Exception):
                ray.kill(managed.actor)
            del self._managed[key]
        self._by_stage.clear()

    def close(self) -> None:
        self.release(None)


def _alive(actor: Any) -> bool:
    import ray

    try:
        return bool(ray.get(actor.alive.remote(), timeout=30))
    except ray.exceptions.RayError:
        return False


def _cause(exc: BaseException) -> str:
    text = str(exc).strip()
    if "ServerStartError" in text:  # the server's own message, with the end of its log
        return text[text.find("ServerStartError"):][:4000]
    return text.splitlines()[-1][:3000]
