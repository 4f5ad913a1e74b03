"""Shared services: what a run's stages share (a model server), declared by name and opened under the plan.

A service is a `Service` subclass registered by name (`@register_service`; other packages through the
`mfpipe.services` entry-point group). A stage lists the services it uses (`Stage.services`); the runner
and the planner loop over what the stages declare and never name one:

- `need(section, has_gpus)`: what a server mfpipe would start needs (`plan.ServiceNeed`: GPUs, CPUs,
  memory), or None when the config names an endpoint to use as it is (nothing to start);
- `open(stage, section, plan)`: before a stage's workers start, in the stage's thread: check the endpoint
  or start the server under the phase's `ServicePlan`; returns the section its workers get (e.g. with
  the server's URL);
- `check(stage)`: None when healthy; asked when a stage's songs come back deferred;
- `recover(stage)`: start again a server of ours that died;
- `worker_env()`: what stage workers need in their environment (e.g. the server's key);
- `release(keep)` / `close()`: stop servers no later phase needs / all of them.

The LLM's vLLM server is one such service (`pipeline.llm_service`).
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, ClassVar

from ..config import Section
from .plan import ServiceNeed, ServicePlan

if TYPE_CHECKING:
    from .stage import Stage, StageSettings


class ServiceError(RuntimeError):
    """A shared service a stage needs is not usable; the message says what to set."""


class Service:
    """One shared service of a run (one instance per run, shared by the stages that declare it)."""

    name: ClassVar[str]
    section: ClassVar[str]  # the shared config section that configures it (in the stages' `reads`)

    def __init__(self, nodes: int = 1):
        self.nodes = nodes  # Ray nodes: more than one and a server must be reachable from the others

    @classmethod
    def need(cls, section: Section, has_gpus: bool) -> ServiceNeed | None:
        return None

    def open(self, stage: str, section: Section, plan: ServicePlan | None) -> Section:
        return section

    def check(self, stage: str) -> str | None:
        return None

    def recover(self, stage: str) -> bool:
        return False

    def worker_env(self) -> dict[str, str]:
        return {}

    def release(self, keep: ServicePlan | None = None) -> None:
        """Stop what this service started, unless the next phase wants the same share (`keep`)."""

    def close(self) -> None:
        self.release(None)


_SERVICES: dict[str, type[Service]] = {}
_loaded = False


def register_service(cls: type[Service]) -> type[Service]:
    _SERVICES[cls.name] = cls
    return cls


def service_types() -> dict[str, type[Service]]:
    global _loaded
    if not _loaded:
        from . import llm_service  # noqa: F401 - the built-in services register themselves

        for ep in entry_points(group="mfpipe.services"):
            register_service(ep.load())
        _loaded = True
    return dict(_SERVICES)


def service_needs(stage_cls: type[Stage], settings: StageSettings, has_gpus: bool) -> dict[str, ServiceNeed]:
    """The servers mfpipe would start for this stage's declared services, by name."""
    types = service_types()
    out = {}
    for name in stage_cls.services:
        cls = types[name]
        need = cls.need(settings.shared[cls.section], has_gpus)
        if need is not None:
            out[name] = need
    return out


class Services:
    """The run's services, opened by the stages that declare them; `plans`: the current phase's shares."""

    def __init__(self, nodes: int = 1):
        self.nodes = nodes
        self.plans: dict[str, ServicePlan] = {}
        self._open: dict[str, Service] = {}
        self._used: dict[str, list[str]] = {}  # stage -> the services it opened
        self._lock = threading.Lock()  # stages open services from their own threads

    def _service(self, name: str) -> Service:
        with self._lock:
            if name not in self._open:
                self._open[name] = service_types()[name](self.nodes)
            return self._open[name]

    def open(self, stage_cls: type[Stage], settings: StageSettings) -> StageSettings:
        """The settings `stage_cls`'s workers get, with every declared service opened for them."""
        for name in stage_cls.services:
            service = self._service(name)
            section = service.open(stage_cls.name, settings.shared[service.section], self.plans.get(name))
            settings = settings.replace_shared(service.section, section)
            self._used.setdefault(stage_cls.name, []).append(name)
        return settings

    def check(self, stage: str) -> str | None:
        for name in self._used.get(stage, []):
            problem = self._open[name].check(stage)
            if problem:
                return problem
        return None

    def recover(self, stage: str) -> bool:
        return any([self._open[name].recover(stage) for name in self._used.get(stage, [])])

    def worker_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for service in list(self._open.values()):
            env.update(service.worker_env())
        return env

    def release(self, following: dict[str, ServicePlan] | None = None) -> None:
        """After a phase: stop the servers the next phase does not want at the same share."""
        for name, service in list(self._open.items()):
            service.release((following or {}).get(name))
        self._used.clear()

    def close(self) -> None:
        for service in list(self._open.values()):
            service.close()
        self._open.clear()
        self._used.clear()


def describe_error(exc: BaseException) -> str:
    """The useful line of an error from a Ray actor (a server's own message, with the end of its log)."""
    text = str(exc).strip()
    if "ServerStartError" in text:
        return text[text.find("ServerStartError"):][:4000]
    return text.splitlines()[-1][:3000] if text else type(exc).__name__


__all__ = ["Service", "ServiceError", "Services", "describe_error", "register_service", "service_needs",
           "service_types"]
