"""Starting / joining Ray, and checking a stage's declared resources against the cluster."""

from __future__ import annotations

import logging
import os
from typing import Any

from .config import RunConfig


class ClusterConnectError(RuntimeError):
    """The Ray cluster named by --ray-address / RAY_ADDRESS cannot be joined."""


class AuthTokenError(RuntimeError):
    """Ray token auth is asked for, but the token cannot be read."""


def find_token() -> str | None:
    """Ray's auth token, looked up as Ray's own clients do: RAY_AUTH_TOKEN, then
    RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token. None when there is none. Never logged."""
    from ray._raylet import AuthenticationTokenLoader
    from ray.exceptions import AuthenticationError

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()  # it caches the first answer; the environment may have changed since
    try:
        if not loader.has_token(ignore_auth_mode=True):
            return None
        return loader.get_raw_token(ignore_auth_mode=True) or None
    except AuthenticationError as exc:  # e.g. RAY_AUTH_TOKEN_PATH names a missing file
        raise AuthTokenError(str(exc).split(". Note:")[0]) from None


def _use_token_if_available() -> None:
    """Joining a named cluster: send the token we have, as `mfpipe submit` does.

    Ray turns token mode on by itself only for a cluster it finds locally, never for
    an explicit address; RAY_AUTH_MODE, when set, is always obeyed.
    """
    if os.environ.get("RAY_AUTH_MODE") or find_token() is None:
        return
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")  # Ray caches its config; re-read it so this process sees token mode


def cluster_address(run: RunConfig, address: str | None = None) -> str | None:
    """The Ray cluster a run joins, or None for a fresh local instance.

    In order: the `--ray-address` argument, `run.ray_address` from the config,
    then the `RAY_ADDRESS` environment variable, which Ray sets for the driver of
    a submitted job (so a job's `mfpipe run` joins the job's cluster). An http(s)
    RAY_ADDRESS names a dashboard (Ray's job CLI convention), not a cluster to
    join: it is left to `mfpipe submit`. Nothing is ever joined by discovery: with
    none of the three, mfpipe starts its own embedded instance even when another
    cluster runs on this machine.
    """
    from_env = os.environ.get("RAY_ADDRESS", "").strip()
    if from_env.startswith(("http://", "https://")):
        from_env = ""
    return address or run.ray_address or from_env or None


def init_ray(run: RunConfig, *, address: str | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = dict(
        logging_level=logging.WARNING,
        log_to_driver=True,
        configure_logging=True,
    )
    address = cluster_address(run, address)
    if address:
        # An existing cluster (its nodes run mfpipe from their own install).
        _use_token_if_available()
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            raise ClusterConnectError(
                f"cannot join the Ray cluster at {address}: {exc}. Check the address (the GCS port, "
                "e.g. HEAD:6379, not the dashboard's) and, for a cluster with token auth, "
                "RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token") from None
    else:
        # A throwaway local cluster: Ray's token auth stays on; its notice that it is on
        # is not for our users.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(
            # "local": always a fresh embedded instance, never a cluster that happens to be
            # running on this machine (a bare ray.init() would join the latest one).
            address="local",
            num_cpus=run.num_cpus,
            num_gpus=run.num_gpus,
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
    alive = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        alive += 1
        res = node.get("Resources", {})
        for k in largest:
            largest[k] = max(largest[k], float(res.get(k, 0.0)))
    total = ray.cluster_resources()
    return {
        "node_CPU": largest["CPU"],
        "node_GPU": largest["GPU"],
        "CPU": float(total.get("CPU", 0.0)),
        "GPU": float(total.get("GPU", 0.0)),
        "nodes": float(alive),
        # GPU nodes report their GPU type (e.g. accelerator_type:H100): the plan reads memory from it
        **{k: float(v) for k, v in total.items() if k.startswith("accelerator_type:")},
    }
