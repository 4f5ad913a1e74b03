"""Serving the review app with uvicorn: bind first (a taken port is a clear error, port 0 picks a free one),
then run on that socket. Loopback needs nothing more; any other host gets a token, printed once by the
caller and never logged (uvicorn's access log, which would show it in a URL, is off)."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from .app import LOOPBACK_NAMES, create_app


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (OSError when it cannot be had, e.g. the port is taken)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@dataclass
class Served:
    app: FastAPI
    sock: socket.socket
    url: str  # what to open (with the token, when there is one)
    token: str | None


def prepare(output: str, reviewer: str, host: str = "127.0.0.1", port: int = 0) -> Served:
    """The app over `output`, bound to host:port; a token when the host is not loopback."""
    token = None if is_loopback(host) else secrets.token_urlsafe(24)
    allowed = LOOPBACK_NAMES if token is None else ["*"]  # beyond loopback the token guards, not the name
    app = create_app(output, reviewer, token=token, allowed_hosts=allowed)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
    return Served(app=app, sock=sock, url=url, token=token)


def server(served: Served, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for the prepared app (run it with `.run(sockets=[served.sock])`)."""
    config = uvicorn.Config(served.app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=3)
    return uvicorn.Server(config)
