"""The review web app (FastAPI): the song list, a song's page, its audio, and the decisions API.

Safe by default:
- every string reaches the page through Jinja with autoescaping (data for the
  script through `tojson`, which escapes <, >, & and quotes); the pages load
  only this app's own script and stylesheet (a Content-Security-Policy says so);
- the only audio served is a corpus song's own file, looked up by song_id in the
  ingest rows; any other path is a 404;
- requests must name this server as their host (a page elsewhere cannot reach
  it through DNS rebinding), and a decision must carry the key the pages hold
  (a page elsewhere cannot post one);
- with a `token` (any host but loopback), every request needs it: the URL the
  server prints once carries it, the first visit trades it for a cookie.
"""

from __future__ import annotations

import contextlib
import hmac
import re
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..songfacts import clock
from ..store import OutputStore
from .corpus import CorpusIndex, SongSummary, song_rows
from .decisions import DecisionStore, ReviewError, new_decision, resolve
from .items import Item, chain_items, synthesize_items
from .media import AudioFiles, AudioUnavailable
from .views import ListQuery, neighbours, review_view, song_list, song_page

COOKIE = "mfpipe_review"
KEY_HEADER = "x-review-key"
SONG_ID = re.compile(r"^[0-9a-f]{8,128}$")
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")


class DecisionIn(BaseModel):
    item: str = Field(max_length=300)
    sha256: str = Field(max_length=64)
    action: str = Field(max_length=10)
    reason: str | None = Field(None, max_length=80)
    edit: dict[str, Any] | None = None


class ReviewState:
    """What the app holds: the folder, its index (refreshed as the folder changes), decisions, audio."""

    def __init__(self, output: str, reviewer: str):
        self.store = OutputStore(output)
        self.index = CorpusIndex(self.store)
        self.decisions = DecisionStore(self.store)
        self.audio = AudioFiles()
        self.reviewer = reviewer
        self.page_key = secrets.token_urlsafe(24)  # what a decision must carry (the pages hold it)
        self._lock = threading.Lock()

    def current(self) -> tuple[CorpusIndex, list[dict[str, Any]]]:
        with self._lock:
            return self.index.refresh(), self.decisions.load()

    def song(self, song_id: str) -> tuple[CorpusIndex, list[dict[str, Any]], SongSummary]:
        index, decisions = self.current()
        song = index.songs.get(song_id) if SONG_ID.match(song_id) else None
        if song is None or not song.has_audio:
            raise HTTPException(404, "no such song in this corpus")
        return index, decisions, song


def _templates() -> Jinja2Templates:
    # Lenient with missing fields (an older output lacks some columns); every value is escaped.
    env = jinja2.Environment(loader=jinja2.PackageLoader("mfpipe.review", "templates"), autoescape=True)
    env.filters["clock"] = lambda s: "–" if s is None else clock(s)
    env.filters["short"] = lambda s: (s or "")[:12]
    return Jinja2Templates(env=env)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _token_gate(token: str) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = request.query_params.get("token")
        if given is not None and request.method == "GET" and _same(given, token):
            # Trade the URL's token for a cookie, and drop it from the address bar.
            url = request.url.remove_query_params("token")
            response = RedirectResponse(url.path + (f"?{url.query}" if url.query else ""), status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        bearer = request.headers.get("authorization", "")
        if _same(request.cookies.get(COOKIE, ""), token) or _same(bearer, f"Bearer {token}"):
            return await call_next(request)
        return PlainTextResponse("This review server needs its token: open the URL it printed when it started.",
                                 status_code=401)
    return gate


async def _headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def create_app(output: str, reviewer: str, *, token: str | None = None,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app over one output folder. `token`: required on every request (serve it beyond loopback only
    with one). `allowed_hosts`: the Host names requests may use (default: loopback names)."""
    state = ReviewState(output, reviewer)
    templates = _templates()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.audio.close()

    app = FastAPI(title="mfpipe review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.review = state
    app.middleware("http")(_headers)
    if token:
        app.middleware("http")(_token_gate(token))
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_NAMES)
    static = resources.files("mfpipe.review") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    def page(request: Request, name: str, context: dict[str, Any]) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"reviewer": state.reviewer, "page_key": state.page_key,
                                                          "output": state.store.url, **context})

    @app.get("/", response_class=HTMLResponse)
    def songs(request: Request) -> HTMLResponse:
        index, decisions = state.current()
        query = ListQuery.from_params(request.query_params)
        return page(request, "list.html", {**song_list(index, decisions, query), "qs": query.encoded()})

    @app.get("/song/{song_id}", response_class=HTMLResponse)
    def song(request: Request, song_id: str) -> HTMLResponse:
        index, decisions, summary = state.song(song_id)
        query = ListQuery.from_params(request.query_params)
        prev, nxt = neighbours(index, decisions, query, song_id)
        qs = f"?{query.encoded()}" if query.encoded() else ""
        view = song_page(index, summary, decisions, state.reviewer)
        config = {"duration": view["duration"], "prev": prev and f"/song/{prev}{qs}",
                  "next": nxt and f"/song/{nxt}{qs}", "list": f"/{qs}", "song": song_id}
        return page(request, "song.html", {**view, "config": config, "prev": config["prev"],
                                           "next": config["next"], "list_url": config["list"]})

    @app.get("/audio/{song_id}")
    def audio(song_id: str) -> FileResponse:
        _, _, summary = state.song(song_id)
        try:
            path, media = state.audio.file(summary.song_id, summary.source, summary.subtype, summary.sample_rate)
        except AudioUnavailable as exc:
            raise HTTPException(404, str(exc)) from None
        return FileResponse(path, media_type=media)

    @app.post("/api/decision")
    def decide(request: Request, body: DecisionIn) -> JSONResponse:
        if not _same(request.headers.get(KEY_HEADER, ""), state.page_key):
            raise HTTPException(403, "a decision must come from this server's own page")
        _, _, summary = state.song(body.item.split(":", 1)[0])
        item = _find_item(state, summary, body.item)
        try:
            decision = new_decision(state.reviewer, item, body.action, body.reason, body.edit, body.sha256)
        except ReviewError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        state.decisions.record(decision)
        _, decisions = state.current()
        review = resolve(decisions, {item.key: item.sha256}).get(item.key)
        return JSONResponse(jsonable_encoder({"item": item.key, "review": review_view(review, state.reviewer)}))

    return app


def _find_item(state: ReviewState, song: SongSummary, key: str) -> Item:
    """The item as it is now (its text from the song's current rows); chains only when not stale."""
    if key not in {i.key for i in song.items}:
        raise HTTPException(404, "no such item in this song (reload the page)")
    rows = song_rows(state.store, song)
    candidates = synthesize_items(rows["synthesize"]) if "synthesize" in rows else []
    candidates += chain_items(rows["think"]) if "think" in rows else []
    for item in candidates:
        if item.key == key:
            return item
    raise HTTPException(404, "no such item in this song (reload the page)")
