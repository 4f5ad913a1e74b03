"""Ray Jobs: `mfpipe submit` sends `mfpipe run` to a Ray cluster; `mfpipe jobs` watches it.

How a job reaches the cluster:
- code: the cluster's nodes run mfpipe from their own install (the production
  image has it); nothing of the local checkout is uploaded. The job's entrypoint
  is `mfpipe run --config mfpipe-config.yaml ...`.
- config: resolved here (defaults < profile < --config file < --set), written as
  `mfpipe-config.yaml` into a one-file working_dir that Ray uploads with the job
  (its runtime env). So the job runs exactly the config shown at submission, and
  the same `config hash` appears in the output's provenance. `profile: auto`
  resolves to `production` here: the cluster, not the submitting laptop, has the
  GPUs (`--set profile=cpu` for a cluster without them).
- cluster: the job's driver joins the job's own cluster through RAY_ADDRESS,
  which Ray sets for it (see `ray_runtime.cluster_address`).
- auth: Ray's token auth (on by default in recent Ray). The token is read the
  way Ray's own clients read it (RAY_AUTH_TOKEN, then RAY_AUTH_TOKEN_PATH, then
  ~/.ray/auth_token) and sent as a bearer header; RAY_AUTH_MODE=disabled sends
  none. The token is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfpipe import __version__

from . import registry
from .config import ConfigError, PipelineConfig, load_config
from .ray_runtime import AuthTokenError, find_token

CONFIG_NAME = "mfpipe-config.yaml"
# The vLLM Service of infra/vllm/deployment.yaml, as pods of the cluster reach it (tests check they agree).
CLUSTER_LLM_URL = "http://mfpipe-llm:8000/v1"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Options of `mfpipe run` whose value submit folds into the shipped config file.
_CONFIG_OPTS = ("--config", "-c")
_SET_OPTS = ("--set",)


class SubmitError(RuntimeError):
    """A submission or job request that cannot go ahead; the message says why."""


# ------------------------------------------------------------------ connecting


def dashboard_address(address: str | None) -> str:
    """The cluster's job API: --address, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS (Ray's order)."""
    found = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not found:
        raise SubmitError("no cluster given: pass --address http://HEAD:8265 (the Ray dashboard) "
                          "or set RAY_API_SERVER_ADDRESS")
    return found.rstrip("/")


def auth_headers() -> dict[str, str]:
    """The bearer header for a token-auth cluster; none with RAY_AUTH_MODE=disabled or no token."""
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "disabled":
        return {}
    try:
        token = find_token()
    except AuthTokenError as exc:
        raise SubmitError(str(exc)) from None
    if token is None:
        if mode == "token":
            raise SubmitError("RAY_AUTH_MODE=token but no Ray auth token was found: set RAY_AUTH_TOKEN or "
                              "RAY_AUTH_TOKEN_PATH, or put the cluster's token in ~/.ray/auth_token "
                              "(`ray get-auth-token` on the head node prints it)")
        return {}
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def _address_env_cleared() -> Iterator[None]:
    """Ray lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override an explicit address; we do not."""
    saved = {k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _explain(exc: Exception, url: str) -> SubmitError:
    """Ray's errors, phrased for our users (and never with the auth header)."""
    from ray.exceptions import AuthenticationError

    text = str(exc).strip()
    if isinstance(exc, AuthenticationError):
        first = text.splitlines()[0] if text else "authentication failed"
        return SubmitError(f"the cluster at {url} refused the request ({first}). It uses Ray token auth: "
                           "set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or put its token in ~/.ray/auth_token")
    if "404" in text and "does not exist" in text:
        return SubmitError(text.split(": ", 1)[-1])
    return SubmitError(f"{type(exc).__name__}: {text}")


class Jobs:
    """The cluster's job API (Ray's JobSubmissionClient), authenticated when the cluster wants a token."""

    def __init__(self, address: str | None):
        from ray.job_submission import JobSubmissionClient

        # Ray's client logs each upload and websocket close at INFO; our users need none of it.
        for name in ("ray.dashboard", "ray._private.runtime_env"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.url = dashboard_address(address)
        headers = auth_headers()
        with _address_env_cleared():
            try:
                self.client = JobSubmissionClient(self.url, headers=headers)
            except ConnectionError as exc:
                raise SubmitError(f"cannot reach the Ray dashboard at {self.url}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - reported with its cause
                raise _explain(exc, self.url) from None

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise _explain(exc, self.url) from None

    def submit(self, submission: Submission) -> str:
        """Send the job; its runtime env carries the resolved config. Returns the job id."""
        with tempfile.TemporaryDirectory(prefix="mfpipe-job-") as workdir:
            Path(workdir, CONFIG_NAME).write_text(submission.config.to_yaml())
            runtime_env = submission.runtime_env(workdir)
            metadata = {"submitted_by": "mfpipe", "mfpipe_version": __version__,
                        "profile": submission.config.profile, "config_hash": submission.config.content_hash()}
            return self._call(self.client.submit_job, entrypoint=submission.entrypoint,
                              submission_id=submission.job_id, runtime_env=runtime_env, metadata=metadata)

    def info(self, job_id: str):
        """JobDetails: status, message, entrypoint, start/end times, metadata."""
        return self._call(self.client.get_job_info, job_id)

    def status(self, job_id: str) -> str:
        return str(self._call(self.client.get_job_status, job_id).value)

    def logs(self, job_id: str) -> str:
        return self._call(self.client.get_job_logs, job_id)

    def stop(self, job_id: str) -> bool:
        """Ask the cluster to stop the job; False when it had already finished."""
        return self._call(self.client.stop_job, job_id)

    def list(self) -> list:
        """Jobs that mfpipe submitted, newest first."""
        jobs = self._call(self.client.list_jobs)
        ours = [j for j in jobs if (j.metadata or {}).get("submitted_by") == "mfpipe"]
        return sorted(ours, key=lambda j: j.start_time or 0, reverse=True)

    def wait(self, job_id: str, *, timeout: float | None = None, poll: float = 1.0) -> str:
        """Block until the job reaches a terminal status; return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.status(job_id)
            if state in TERMINAL:
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise SubmitError(f"job {job_id} is still {state} after {timeout:g} s")
            time.sleep(poll)

    def follow(self, job_id: str, write: Callable[[str], None]) -> str:
        """Stream the job's logs as they come, then return its final status."""

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                write(chunk)

        try:
            asyncio.run(tail())
        except Exception as exc:  # noqa: BLE001 - the stream can close early; the status still tells
            if self.status(job_id) not in TERMINAL:
                raise _explain(exc, self.url) from None
        # The log stream ends with the driver; the job's status follows a moment later.
        return self.wait(job_id, timeout=120, poll=0.5)


# ------------------------------------------------------------------ the job


@dataclass
class Submission:
    job_id: str
    entrypoint: str
    config: PipelineConfig
    notes: list[str] = field(default_factory=list)  # how the profile and the LLM endpoint were chosen

    def runtime_env(self, workdir: str) -> dict[str, Any]:
        """The job's runtime env: the one-file working dir with the config, and the environment.

        `mfpipe jobs stop`: Ray sends the driver SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S;
        the run drains for run.drain_seconds, so it gets that and a margin to commit and shut down."""
        wait = int(self.config.run.drain_seconds + 15)
        return {"working_dir": workdir, "env_vars": {"PYTHONUNBUFFERED": "1", "RAY_JOB_STOP_WAIT_TIME_S": str(wait)}}


def _option_values(args: list[str], names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Pull `--name VALUE` / `--name=VALUE` out of args: (values, remaining args)."""
    values, rest = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if arg in names:
            if i + 1 >= len(args):
                raise SubmitError(f"{arg} needs a value")
            values.append(args[i + 1])
            i += 2
            continue
        if eq and name in names and name.startswith("--"):
            values.append(inline)
        else:
            rest.append(arg)
        i += 1
    return values, rest


def _check_paths(args: list[str]) -> None:
    """Inputs/outputs are opened on the cluster: they must name the same thing there."""
    for names in (("--input", "-i"), ("--output", "-o")):
        values, _ = _option_values(args, names)
        for value in values:
            if "://" not in value and not os.path.isabs(value):
                raise SubmitError(f"{names[0]} {value}: a relative path would resolve inside the job's temporary "
                                  "working directory on the cluster; give an absolute path that every "
                                  "node sees (a shared volume) or a URL such as s3://bucket/prefix")
    outputs, _ = _option_values(args, ("--output", "-o"))
    if not outputs:
        raise SubmitError("give the job an --output (an absolute shared path or a URL such as s3://...): "
                          "the default ./mfpipe-out would end up in the job's temporary working directory")


def cluster_gpus(address: str | None) -> tuple[float | None, str]:
    """(GPUs of the cluster behind this dashboard, None when it cannot be asked; why)."""
    try:
        from ray.util.state import list_nodes

        url = dashboard_address(address)
        with _address_env_cleared():
            nodes = list_nodes(address=url, limit=10000, raise_on_missing_output=False)
        gpus = sum(float((n.resources_total or {}).get("GPU", 0.0)) for n in nodes if n.state == "ALIVE")
        return gpus, f"auto: the Ray cluster at {url} has {gpus:g} GPU(s)"
    except Exception as exc:  # noqa: BLE001 - then the cluster is assumed to have GPUs, and we say so
        return None, f"auto: could not ask the cluster for its GPUs ({type(exc).__name__}); assumed it has some"


def prepare(run_args: list[str], config_file: str | None, job_id: str | None = None, *,
            profile: str | None = None, address: str | None = None, llm: str = "service") -> Submission:
    """Check the `mfpipe run` command line, resolve its config, build the entrypoint.

    `profile` auto is decided by the cluster's GPUs (asked through its dashboard), not this
    machine's. `llm`: "service" points `llm.base_url` (when the config leaves it unset) at the vLLM
    Service of infra/vllm (`CLUSTER_LLM_URL`); "start" leaves it unset, so the job starts a vLLM
    server inside the cluster; anything else is taken as the URL."""
    if not run_args or run_args[0] != "run":
        raise SubmitError("submit sends `mfpipe run` to the cluster: write its arguments after `--`, "
                          "e.g. mfpipe submit --address http://HEAD:8265 -- run --stage all --input ... --output ...")
    args = list(run_args[1:])
    configs, args = _option_values(args, _CONFIG_OPTS)
    sets, args = _option_values(args, _SET_OPTS)
    if configs and config_file:
        raise SubmitError("give the config file once: either `submit --config FILE` or `run --config FILE`")
    if len(configs) > 1:
        raise SubmitError("give --config once")
    config_file = config_file or (configs[0] if configs else None)
    _check_paths(args)
    stages, _ = _option_values(args, ("--stage", "-s"))
    why: list[str] = []

    def detect() -> bool:
        gpus, reason = cluster_gpus(address)
        why.append(reason)
        return gpus is None or gpus > 0

    try:
        for stage in stages:
            registry.plan(stage)
        # A cluster is where the GPUs are: `auto` is decided by the cluster, not by this machine.
        config = load_config(config_file, [*sets, *([f"profile={profile}"] if profile else [])], detect_gpu=detect)
        # The production LLM on a cluster is the Deployment of infra/vllm; the cpu profile's tiny
        # model is served by the job itself.
        if not config.llm.base_url and llm != "start" and (config.profile == "production" or llm != "service"):
            url = CLUSTER_LLM_URL if llm == "service" else llm
            config = config.model_copy(update={"llm": config.llm.model_copy(update={"base_url": url})})
            why.append(f"llm.base_url {url}")
    except (ConfigError, registry.StageError) as exc:
        raise SubmitError(str(exc)) from None
    entrypoint = shlex.join(["mfpipe", "run", "--config", CONFIG_NAME, *args])
    job_id = job_id or f"mfpipe-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    return Submission(job_id=job_id, entrypoint=entrypoint, config=config, notes=why)
