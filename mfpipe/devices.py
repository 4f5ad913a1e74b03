"""Which torch device a model runs on: one rule for every backend, and never a silent CPU.

A worker that was given GPUs (Ray's GPU ids for an actor that asked for `num_gpus`, or
`CUDA_VISIBLE_DEVICES`) and finds no usable CUDA is broken, not slow: Music Flamingo 8B, Parakeet
and Demucs would run on the CPU for days and the run would still end with exit 0. So `pick_device`
refuses at once, with torch's CUDA version, the driver's and what to do. The one exception is a
rehearsal: a CPU machine that declares GPUs to Ray on purpose (`run.num_gpus`, to exercise the
production plan) sets `run.cpu_rehearsal`; the runner hands its workers `MFPIPE_CPU_REHEARSAL=1`,
the banner says so, and only then do GPU stages run on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

REHEARSAL_ENV = "MFPIPE_CPU_REHEARSAL"


class NoCudaError(RuntimeError):
    """A worker holds GPUs but cannot use CUDA; the message says why and what to do."""


def cpu_rehearsal() -> bool:
    """True in a declared-GPU rehearsal on a machine without GPUs (see the module docstring)."""
    return os.environ.get(REHEARSAL_ENV, "") == "1"


def worker_env() -> dict[str, str]:
    """The environment the runner hands its workers so they follow this module's rule."""
    return {REHEARSAL_ENV: "1"} if cpu_rehearsal() else {}


def assigned_gpus() -> list[str]:
    """The GPUs this process was given: Ray's GPU ids inside a Ray worker, else CUDA_VISIBLE_DEVICES."""
    try:
        import ray

        if ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
            ids = [str(i) for i in ray.get_gpu_ids()]
            if ids:
                return ids
    except Exception:  # noqa: BLE001 - outside a Ray worker, or an older Ray: the variable decides
        pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not visible or visible in ("-1", "NoDevFiles", "none"):
        return []
    return [v for v in visible.split(",") if v.strip()]


def pick_device(device: str) -> str:
    """The torch device for a configured one.

    `cpu` is the user's choice and always honoured. `auto`: "cuda" when CUDA works here; "cpu" when
    this process was given no GPU (or in a rehearsal); otherwise `NoCudaError`. `cuda`/`cuda:N`: that
    device when CUDA works (a rehearsal runs it on the CPU); otherwise `NoCudaError`."""
    if device == "cpu":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda" if device == "auto" else device
    gpus = assigned_gpus()
    if cpu_rehearsal() or (device == "auto" and not gpus):
        return "cpu"
    raise NoCudaError(explain_no_cuda(gpus, device))


def explain_no_cuda(gpus: list[str], device: str = "auto") -> str:
    """Why CUDA is not usable here, in words a user can act on."""
    import torch

    given = f"was given GPU(s) {', '.join(gpus)}" if gpus else f"is configured for device {device!r}"
    build = torch.version.cuda
    torch_cuda = f"torch {torch.__version__} is built for CUDA {build}" if build else \
        f"torch {torch.__version__} is a CPU build (no CUDA)"
    driver = driver_version()
    driver_text = f"NVIDIA driver {driver}" if driver else "no NVIDIA driver found"
    cause = _cuda_init_error()
    todo = ("install the CUDA build of torch (scripts/install.sh on the GPU machine: it installs the one the "
            "project is tested with)" if not build else
            f"use a driver that supports CUDA {build} (or the torch build for this driver's CUDA)")
    return (f"this worker {given} but cannot use CUDA: {torch_cuda}; {driver_text}"
            f"{f' ({cause})' if cause else ''}. To fix: {todo}. On a machine with no GPUs that only declares "
            f"them to Ray for a rehearsal of the GPU plan, set run.cpu_rehearsal=true.")


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version, read without initialising CUDA."""
    proc_file = Path("/proc/driver/nvidia/version")
    try:
        text = proc_file.read_text()
    except OSError:
        return None
    for word in text.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None


def _cuda_init_error() -> str | None:
    """torch's own reason for refusing CUDA (e.g. "The NVIDIA driver on your system is too old")."""
    import torch

    if not torch.version.cuda:
        return None
    try:
        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001 - the reason is what we want
        return str(exc).strip().splitlines()[0][:300]
    return None
