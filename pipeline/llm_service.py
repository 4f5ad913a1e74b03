"""The LLM as a shared service: the endpoint `llm.base_url` names, or a vLLM server mfpipe starts.

- An endpoint named by `llm.base_url` (production: the vLLM Deployment of infra/vllm) is checked
  before a stage that uses it starts: it must answer `/v1/models` and list `llm.model`. A wrong URL
  or name fails the stage at once with the cause and what to set, instead of turning every song
  into a reject. Nothing is started, so the plan reserves nothing for it.
- Without `llm.base_url`, mfpipe starts `vllm serve` for the run inside a Ray actor that reserves
  the server's GPU share (`pipeline.plan`), so Ray never places a stage worker on those GPUs; its
  `--gpu-memory-utilization` is the phase's. The server lives as long as the phases that need
  it; if it dies, `recover` starts it again.
- A server that other hosts can reach asks for a key: one mfpipe starts on a multi-node cluster binds
  every interface, so it always gets a key (through the server's environment, `VLLM_API_KEY`, never its
  command line): the key in `llm.api_key_env`'s variable when the user set one, else a fresh one for
  this run. The driver's checks and the stage workers send it (`worker_env`, handed to the workers by
  environment); it never enters the config, provenance, logs or summaries.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import threading
from dataclasses import dataclass
from typing import Any

from ..backends import vllm_server
from ..backends.llm import LlmConfig
from .plan import ServiceNeed, ServicePlan
from .services import Service, ServiceError, describe_error, register_service


class _ServerHost:
    """Ray actor: holds the GPU share and runs the vLLM server process beside itself."""

    def __init__(self, llm_json: str, host: str, gpu_memory_utilization: float | None, tensor_parallel: int,
                 api_key: str | None = None):
        llm = LlmConfig.model_validate_json(llm_json)
        args = list(llm.server.args)
        if gpu_memory_utilization is not None:
            args = vllm_server.with_flag(args, "--gpu-memory-utilization", f"{gpu_memory_utilization:.3f}")
        if tensor_parallel > 1:  # its own worker processes inside our share, not another Ray
            args = vllm_server.with_flag(args, "--distributed-executor-backend", "mp")
        self.server = vllm_server.VllmServer.from_config(llm, host=host, args=args, api_key=api_key)

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
    plan: ServicePlan


@register_service
class LlmService(Service):
    name = "llm"
    section = "llm"

    def __init__(self, nodes: int = 1):
        super().__init__(nodes)
        self._managed: dict[str, _Managed] = {}
        self._by_stage: dict[str, LlmConfig] = {}
        self._keys: dict[str, str] = {}  # env var -> the key this run's workers send
        self._made_keys: set[str] = set()  # env vars whose key this run generated
        self._lock = threading.Lock()  # stages open the service from their own threads: one server for all

    # ------------------------------------------------------------ planning
    @classmethod
    def need(cls, section: LlmConfig, has_gpus: bool) -> ServiceNeed | None:
        if section.base_url:
            return None  # an endpoint of its own: nothing to start, nothing to reserve
        spec = section.server
        gpus = spec.gpus if spec.gpus is not None else (
            float(vllm_server.tensor_parallel_size(spec.args)) if has_gpus else 0.0)
        return ServiceNeed(gpus=gpus, min_gpus=spec.min_gpus, memory_per_share=spec.memory_per_share,
                           memory=spec.memory_need(section.model) if gpus else None, label="LLM server")

    # ------------------------------------------------------------ opening
    def open(self, stage: str, section: LlmConfig, plan: ServicePlan | None) -> LlmConfig:
        """The LLM settings `stage`'s workers get: the checked endpoint, or a server started for it."""
        llm = section
        if not llm.base_url:
            with self._lock:
                managed = self._server(llm, plan or ServicePlan(gpus=0.0, cpus=1.0, gpu_memory_utilization=None))
            llm = llm.model_copy(update={"base_url": managed.base_url})
        problem = self.check_endpoint(llm)
        if problem:
            raise ServiceError(problem)
        self._by_stage[stage] = llm
        return llm

    def _server(self, llm: LlmConfig, plan: ServicePlan) -> _Managed:
        import ray

        key = f"{llm.model_dump_json()}|{plan.gpus}"
        found = self._managed.get(key)
        if found is not None:
            return found
        host = llm.server.host
        if self.nodes > 1 and vllm_server.is_loopback(host):
            host = "0.0.0.0"  # stage workers on other nodes must reach it; it advertises its node's IP
        api_key = self._key_for(llm, required=not vllm_server.is_loopback(host))
        tp = vllm_server.tensor_parallel_size(llm.server.args)
        actor = ray.remote(_ServerHost).options(num_cpus=plan.cpus, num_gpus=plan.gpus, max_restarts=0).remote(
            llm.model_dump_json(), host, plan.gpu_memory_utilization, tp, api_key)
        share = f"{plan.gpus:g} GPU, gpu-memory-utilization {plan.gpu_memory_utilization}" if plan.gpus else "CPU"
        print(f"starting the vLLM server for {llm.model} ({share})", file=sys.stderr, flush=True)
        try:
            base_url = ray.get(actor.start.remote())
        except ray.exceptions.RayError as exc:
            ray.kill(actor)
            raise ServiceError(f"the vLLM server for {llm.model} did not start: {describe_error(exc)}") from None
        managed = self._managed[key] = _Managed(key, actor, base_url, plan)
        return managed

    def _key_for(self, llm: LlmConfig, *, required: bool) -> str | None:
        """The key the server asks for: the user's (`llm.api_key_env`), else one made for this run when the
        server can be reached from other hosts; None for a loopback server nobody gave a key."""
        key = os.environ.get(llm.api_key_env) or None
        if key is None and required:
            key = secrets.token_urlsafe(32)
            os.environ[llm.api_key_env] = key  # the driver's own checks send it too
            self._made_keys.add(llm.api_key_env)
        if key is not None:
            self._keys[llm.api_key_env] = key
        return key

    def worker_env(self) -> dict[str, str]:
        keys = dict(self._keys)
        for llm in self._by_stage.values():  # an endpoint given by llm.base_url that asks for a key
            if os.environ.get(llm.api_key_env):
                keys.setdefault(llm.api_key_env, os.environ[llm.api_key_env])
        return keys

    # ------------------------------------------------------------ health
    @staticmethod
    def check_endpoint(llm: LlmConfig) -> str | None:
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
        return self.check_endpoint(llm)

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
    def release(self, keep: ServicePlan | None = None) -> None:
        """Stop the servers mfpipe started, except one whose share the next phase wants again."""
        import ray

        for key, managed in list(self._managed.items()):
            if keep is not None and managed.plan.gpus == keep.gpus:
                continue
            with contextlib.suppress(Exception):
                ray.get(managed.actor.stop.remote(), timeout=120)
            with contextlib.suppress(Exception):
                ray.kill(managed.actor)
            del self._managed[key]
        self._by_stage.clear()

    def close(self) -> None:
        self.release(None)
        for name in self._made_keys:  # a key made for this run ends with it
            os.environ.pop(name, None)
        self._made_keys.clear()
        self._keys.clear()


def _alive(actor: Any) -> bool:
    import ray

    try:
        return bool(ray.get(actor.alive.remote(), timeout=30))
    except ray.exceptions.RayError:
        return False
