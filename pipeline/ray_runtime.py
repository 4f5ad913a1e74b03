"""Starting / joining Ray, and checking a stage's declared resources against the cluster."""

from __future__ import annotations

import logging
import os
from typing import Any

from .config import Resources, RunConfig


class ResourceUnavailableError(RuntimeError):
    """A stage asks for resources no node of the cluster has (Ray would wait forever)."""


def init_ray(run: RunConfig, *, address: str | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Worker processes must import this checkout's code the same way the driver does.
    kwargs: dict[str, Any] = dict(
        logging_level=logging.WARNING,
        log_to_driver=True,
        configure_logging=True,
    )
    address = address or run.ray_address
    if address:
        ray.init(address=address, **kwargs)
    else:
        # A throwaway local cluster: Ray's token auth stays on; its notice that it is on
        # is not for our users.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(
            # "local": always a fresh embedded instance, never a cluster that happens to be
            # running on this machine (a bare ray.init() would join the latest one).
            address="local",
            num_cpus=run.num_cpus,
            object_store_memory=run.object_store_mb * 2**20 if run.object_store_mb else None,
            include_dashboard=run.dashboard,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            **kwargs,
        )
    _quiet_ray_data()


def _quiet_ray_data() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # mfpipe draws its own, one per stage
    ctx.print_on_execution_start = False
    ctx.execution_options.verbose_progress = False
    from ray.util.debug import log_once

    # Ray Data warns once that its bars are off; they are off on purpose.
    log_once("ray_data_progress_manager_disabled")
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def cluster_capacity() -> dict[str, float]:
    """Largest CPUs / GPUs any single node offers, and the cluster totals."""
    import ray

    largest = {"CPU": 0.0, "GPU": 0.0}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        for k in largest:
            largest[k] = max(largest[k], float(res.get(k, 0.0)))
    total = ray.cluster_resources()
    return {
        "node_CPU": largest["CPU"],
        "node_GPU": largest["GPU"],
        "CPU": float(total.get("CPU", 0.0)),
        "GPU": float(total.get("GPU", 0.0)),
    }


def check_resources(stage: str, res: Resources, capacity: dict[str, float]) -> None:
    """Fail at once, with what to do, instead of letting Ray wait forever."""
    if res.gpus > 0 and capacity["node_GPU"] < res.gpus:
        have = "no GPUs" if capacity["GPU"] == 0 else f"at most {capacity['node_GPU']:g} GPU(s) per node"
        raise ResourceUnavailableError(
            f"stage {stage!r} needs {res.gpus:g} GPU(s) per worker, but the Ray cluster has {have}. "
            f"Run with the cpu profile (--set profile=cpu), set {stage}.resources.gpus=0, "
            "or add GPU nodes to the cluster."
        )
    if res.cpus > 0 and capacity["node_CPU"] < res.cpus:
        raise ResourceUnavailableError(
            f"stage {stage!r} needs {res.cpus:g} CPU(s) per worker, but no node of the Ray cluster "
            f"has more than {capacity['node_CPU']:g}. Lower {stage}.resources.cpus."
        )


def pool_size(res: Resources, capacity: dict[str, float], work_batches: int) -> int:
    """Actor-pool size: as declared, else what the cluster fits; never more than the work."""
    if res.concurrency:
        size = res.concurrency
    elif res.gpus > 0:
        size = int(capacity["GPU"] // res.gpus)
    elif res.cpus > 0:
        size = int(capacity["CPU"] // res.cpus)
    else:
        size = int(capacity["CPU"]) or 1
    return max(1, min(size, work_batches))
