"""A real local Ray cluster (`ray start --head` on 127.0.0.1, token auth on) and a local
S3-compatible server (moto), both started once per session and stopped afterwards.

The cluster gets its own short temp dir, its own ports and its own auth token (in a
file in that temp dir, never in ~/.ray); at the end only ITS processes are stopped:
the `ray start` process group and everything below it (Ray workers set their own
process group, so they are found as descendants). `ray stop` is never used: it
would kill every Ray process on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

# Variables that would point a client (or this cluster) somewhere else.
_FOREIGN = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN and not k.startswith("AWS_")}
    env.update(extra)
    return env


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]  # what a client (or a cluster node) needs to reach it


@dataclass
class LocalCluster:
    gcs: str  # for `mfpipe run --ray-address`
    dashboard: str  # for `mfpipe submit --address`
    temp_dir: Path
    token_path: Path
    s3: S3Server
    client_env: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        """A client's environment: the token (by file, like a user's), the S3 endpoint."""
        return {**self.client_env, **extra}


def _stop_tree(pgid: int) -> None:
    """Stop the processes of one process group and all their descendants, nothing else."""
    procs: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                procs[proc.pid] = proc
                for child in proc.children(recursive=True):
                    procs[child.pid] = child
        except (psutil.Error, ProcessLookupError):
            continue
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=3)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=3)


@pytest.fixture(scope="session")
def s3_server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("the local S3 server (moto) did not start")
            time.sleep(0.2)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    try:
        yield S3Server(endpoint, env)
    finally:
        _stop_tree(proc.pid)  # its own session: its pid is its process group


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    # Short: Ray's unix socket paths live under it (at most 107 characters).
    temp_dir = Path(tempfile.mkdtemp(prefix="mfr-"))
    token_path = temp_dir / "token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    gcs_port, dash_port = free_port(), free_port()
    bin_dir = str(Path(sys.executable).parent)
    # The nodes run this interpreter's mfpipe (as production nodes run the image's), with
    # `mfpipe` on PATH for the job entrypoint, and node-level S3 credentials.
    node_env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", RAY_AUTH_MODE="token",
                         RAY_AUTH_TOKEN_PATH=str(token_path), RAY_USAGE_STATS_ENABLED="0", **s3_server.env)
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
           "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           "--num-cpus=2", "--disable-usage-stats", f"--temp-dir={temp_dir / 'ray'}"]
    starter = subprocess.Popen(cmd, env=node_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    pgid = starter.pid
    try:
        output, _ = starter.communicate(timeout=180)
        if starter.returncode != 0:
            pytest.fail(f"ray start failed:\n{output[-3000:]}")
        cluster = LocalCluster(
            gcs=f"127.0.0.1:{gcs_port}", dashboard=f"http://127.0.0.1:{dash_port}", temp_dir=temp_dir,
            token_path=token_path, s3=s3_server,
            client_env=clean_env(RAY_AUTH_TOKEN_PATH=str(token_path), **s3_server.env))
        yield cluster
    finally:
        _stop_tree(pgid)
        shutil.rmtree(temp_dir, ignore_errors=True)
