"""A small HTTP proxy in front of the REAL vLLM server that injects faults on demand.

Used only for faults a healthy server does not produce on cue: an HTTP 500, a
429, a request that hangs, a garbled answer. Everything else is forwarded to
the real server unchanged.

    with FaultProxy(server_root) as proxy:
        proxy.plan = ["500", "hang", "pass"]   # faults for the next POSTs, in order
        Llm(base_url=proxy.url, ...)
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

from aiohttp import ClientSession, ClientTimeout, web

FAULTS = ("pass", "500", "429", "hang", "garble", "cut")


class FaultProxy:
    def __init__(self, upstream_root: str, hang_s: float = 60.0):
        self.upstream = upstream_root.rstrip("/")
        self.hang_s = hang_s
        self.plan: list[str] = []  # consumed one per POST; then everything passes
        self.default = "pass"
        self.posts = 0
        self.faults_sent: list[str] = []
        self.bodies: list[dict] = []  # the JSON bodies of the POSTs, in order
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=600))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = "pass"
        if request.method == "POST":
            self.posts += 1
            fault = self.plan.pop(0) if self.plan else self.default
            self.faults_sent.append(fault)
            self.bodies.append(json.loads(body or b"{}"))
        if fault == "500":
            return web.json_response({"error": {"message": "injected fault", "code": 500}}, status=500)
        if fault == "429":
            return web.json_response({"error": {"message": "slow down", "code": 429}}, status=429,
                                     headers={"Retry-After": "0"})
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
            return web.json_response({"error": {"message": "hung"}}, status=504)
        status, headers, payload = await self._forward(request, body)
        if fault in ("garble", "cut") and status == 200:
            data = json.loads(payload)
            content = data["choices"][0]["message"]["content"] or ""
            data["choices"][0]["message"]["content"] = content[: max(1, len(content) // 2)]
            if fault == "cut":  # as if max_tokens ran out (a reasoning model spent them thinking)
                data["choices"][0]["finish_reason"] = "length"
            payload = json.dumps(data).encode()
        kind = headers.get("Content-Type", "application/json").split(";")[0]
        return web.Response(status=status, body=payload, content_type=kind)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, dict, bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, self.upstream + request.rel_url.path_qs,
                                         data=body, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.read()
