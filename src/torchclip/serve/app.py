"""The HTTP service: search API, thumbnails and originals by row id, stats, health, metrics, and the page.

`create_app(settings)` builds a FastAPI application around one embedding store and one model. Every
response reads one committed generation of the store: a background task notices new generations (while
`torchclip embed` updates the store) and swaps in a handle on the newest one; a request keeps the handle it
started with. Queries from concurrent clients are micro-batched (`batching`): one forward pass for
the queries that arrive together, then one store search for them.

Security: `check_bind` refuses a non-loopback address without a token; the token (Bearer header, or the
HttpOnly cookie the page's sign-in sets) is compared in constant time; bodies and query strings are
bounded before the application reads them; stored files are reached by row id only (`media.open_stored`);
without a token the service answers only Host headers naming the loopback (no DNS rebinding); no CORS
unless asked; every response carries a strict Content-Security-Policy. See docs/serve.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import hmac
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from torchclip.convert import load
from torchclip.deploy.onnx_runtime import load_onnx_and_processor
from torchclip.image_processor import warm_up
from torchclip.serve.batching import QueueFull, pixels_of, query_encoder, searcher
from torchclip.serve.bind import check_bind, is_loopback
from torchclip.serve.media import BadImage, Gone, Thumbnails, decode_upload, open_stored
from torchclip.store import EmbeddingStore, model_fingerprint

__all__ = ["ServeSettings", "app_from_environment", "create_app", "load_model_for"]

log = logging.getLogger("torchclip.serve")

MAX_K, MAX_OFFSET, MAX_PARTS = 1000, 10_000, 16
MAX_TEXT, MAX_WHERE, MAX_QUERY_STRING = 1000, 2000, 2048
SMALL_BODY = 64 * 1024  # every request but a search carries at most this
COOKIE = "torchclip_token"
STATIC = resources.files("torchclip.serve") / "static"
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: "
        b"data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


@dataclass
class ServeSettings:
    """Everything `torchclip serve` is told; `model=None` means the model the store was embedded with."""

    store: str
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    insecure: bool = False
    cors: list[str] = field(default_factory=list)
    max_upload: int = 20 * 1024 * 1024
    max_queue: int = 256
    max_batch: int = 32
    batch_wait_ms: float = 4.0
    thumbnail_size: int = 256
    thumbnail_cache: str | None = None  # default: STORE/.thumbnails
    refresh_seconds: float = 0.5
    device: str = "cpu"
    dtype: str = "float32"
    backend: str = "torch"  # or "onnx": `model` is then a folder from `torchclip export MODEL OUT --format onnx`


def load_model_for(
    store: Any, model: str | None, device: str = "cpu", dtype: str = "float32", backend: str = "torch"
) -> tuple[Any, Any]:
    """(model, processor) to search `store` with: `model`, else the checkpoint the store was embedded with."""
    if backend == "onnx":
        return load_onnx_and_processor(model, device, dtype)
    name = model or store.model.get("path") or store.model.get("name")
    if not name:
        raise ValueError("the store does not say which model embedded it; pass --model")
    return load(name, device=device, dtype=getattr(torch, dtype))


# ---------------------------------------------------------------------- request and errors


class ApiError(Exception):
    """A request the service answers with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, max_length=MAX_TEXT, description="a text query")
    image: str | None = Field(None, description="an image query: base64 of the file's bytes (or a data: URL)")
    key: str | None = Field(None, max_length=4096, description="a stored item's key: more like this")
    id: int | None = Field(None, ge=0, description="a stored item's id: more like this")
    vector: list[float] | None = Field(None, max_length=8192, description="an embedding of the store's dimension")


class QueryPart(_Query):
    weight: float = Field(1.0, description="this part's weight in the combination (negative: away from it)")


class SearchRequest(_Query):
    queries: list[QueryPart] | None = Field(None, max_length=MAX_PARTS, description="a weighted combination")
    k: int = Field(20, ge=1, le=MAX_K, description="results per page")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="results to skip (paging)")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="leave out results scoring below this")
    where: str | None = Field(None, max_length=MAX_WHERE, description="the store's metadata filter (SQL-like)")


QUERY_FIELDS = ("text", "image", "key", "id", "vector")


def _the_query(query: _Query, label: str) -> tuple[str, Any]:
    """(field, value) of the one query field set in `query`; `label` names it in errors."""
    given = [name for name in QUERY_FIELDS if getattr(query, name) is not None]
    if len(given) != 1:
        got = ", ".join(given) if given else "none"
        raise ApiError(400, f"{label}: give exactly one of {', '.join(QUERY_FIELDS)} (got {got})")
    name = given[0]
    value = getattr(query, name)
    if isinstance(value, str) and "\x00" in value:
        raise ApiError(400, f"{label}: {name} contains a NUL character")
    if name == "text" and not value.strip():
        raise ApiError(400, f"{label}: text is empty")
    return name, value


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:3]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        if error.get("type") == "json_invalid":
            problems.append("the body is not valid JSON")
        elif error.get("type") == "model_attributes_type":
            problems.append("the body must be a JSON object (Content-Type: application/json)")
        elif error.get("type") == "extra_forbidden":
            problems.append(f"unknown field {location!r}")
        else:
            problems.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a metadata value (NumPy scalars, dates)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------- the live store


class LiveStore:
    """The handle requests read, moved to each new committed generation by `watch` without a restart.

    A request takes `current` once and uses only that handle, so its answer comes from one generation.
    """

    def __init__(self, folder: str | os.PathLike):
        self._open = lambda: EmbeddingStore(folder)
        self.current = self._open()
        self._probe = self._open()

    def check(self) -> bool:
        """Move to the newest committed generation if there is one; True if it changed."""
        if not self._probe.refresh() and self._probe.generation == self.current.generation:
            return False
        self.current, self._probe = self._probe, self._open()
        return True

    async def watch(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                if await run_in_threadpool(self.check):
                    log.info("store generation %s: %d rows", self.current.generation, len(self.current))
            except Exception as exc:  # a commit in progress, a file system hiccup: try again next time
                log.warning("could not check the store for a new generation: %s", exc)


# ---------------------------------------------------------------------- metrics


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps in one process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "torchclip_requests", "HTTP requests answered", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "torchclip_request_seconds",
            "time to answer a request",
            ["route"],
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
        )
        self.batch_seconds = Histogram(
            "torchclip_batch_seconds",
            "time of one batched call: a forward pass (kind text or image) or a store search (kind search)",
            ["kind"],
            registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
        )
        self.batch_size = Histogram(
            "torchclip_batch_size",
            "queries per batched call",
            ["kind"],
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.rejected = Counter(
            "torchclip_queue_rejections", "queries refused because the queue was full", registry=self.registry
        )
        self.queue_depth = Gauge(
            "torchclip_queue_depth", "queries waiting to be embedded or searched", registry=self.registry
        )

    def on_batch(self, kind: str, size: int, seconds: float) -> None:
        """Record one batched call: kind "text", "image" (a forward pass) or "search"."""
        self.batch_seconds.labels(kind).observe(seconds)
        self.batch_size.labels(kind).observe(size)


# ---------------------------------------------------------------------- the guard (pure ASGI)


def cookie_value(token: str) -> str:
    """What the page's cookie holds: a keyed hash of the token (cookie-safe characters; not the token itself)."""
    return hmac.new(token.encode(), b"torchclip serve cookie", "sha256").hexdigest()


Send = Callable[[dict[str, Any]], Awaitable[None]]


class Guard:
    """Runs before the application: bounds, Host check, token, metrics, and security headers on every answer."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: Metrics):
        self.app = app
        self.token = settings.token.encode() if settings.token else None
        self.loopback_only = is_loopback(settings.host) and not settings.token
        self.search_body = math.ceil(settings.max_upload * 4 / 3) + 1024 * 1024  # base64 plus the JSON around it
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status_seen = [500]

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        refusal = self._refusal(scope)
        try:
            if refusal is None:
                receive, refusal = await self._bounded_body(scope, receive)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            route = getattr(scope.get("route"), "path", None) or ("refused" if refusal else "other")
            self.metrics.requests.labels(route, str(status_seen[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)

    def _refusal(self, scope: dict[str, Any]) -> Response | None:
        if len(scope.get("query_string", b"")) > MAX_QUERY_STRING:
            return _error(414, f"the query string is longer than {MAX_QUERY_STRING} bytes")
        headers = dict(scope.get("headers", []))
        if self.loopback_only:
            host = headers.get(b"host", b"").decode("latin-1").rsplit(":", 1)[0]
            if not is_loopback(host):
                return _error(400, "this service answers only requests addressed to localhost (Host header)")
        path = scope.get("path", "")
        if self.token and (path.startswith("/api/") or path == "/metrics") and path != "/api/login":
            if not self._authorised(headers):
                return _error(
                    401, "missing or wrong token (send Authorization: Bearer TOKEN)", {"www-authenticate": "Bearer"}
                )
        return None

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        assert self.token is not None
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() == b"bearer ":
            return hmac.compare_digest(authorization[7:].strip(), self.token)
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == COOKIE.encode():
                return hmac.compare_digest(value, cookie_value(self.token.decode()).encode())
        return False

    async def _bounded_body(self, scope: dict[str, Any], receive: Any) -> tuple[Any, Response | None]:
        """Read the body up to its route's limit (413 beyond it, before reading the rest), then replay it."""
        limit = self.search_body if scope.get("path") == "/api/search" else SMALL_BODY
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_large = _error(413, f"the request body is larger than {limit:,} bytes (see --max-upload)")
        if declared is not None:
            try:
                if int(declared) > limit:
                    return receive, too_large
            except ValueError:
                return receive, _error(400, "the Content-Length header is not a number")
        if scope.get("method") in ("GET", "HEAD"):
            return receive, None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return receive, _error(400, "the client went away before sending its whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return receive, too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay, None


# ---------------------------------------------------------------------- the application


def create_app(settings: ServeSettings, model: Any = None, processor: Any = None) -> Guard:
    """The ASGI app serving `settings.store`; `model`/`processor` as loaded by the caller, else loaded here
    (`load_model_for`). Its FastAPI application (routes, OpenAPI schema) is `.app` of the returned guard."""
    check_bind(settings.host, settings.token, settings.insecure)
    live = LiveStore(settings.store)
    if model is None:
        model, processor = load_model_for(
            live.current, settings.model, settings.device, settings.dtype, settings.backend
        )
    recorded = live.current.model.get("fingerprint")
    if recorded and model_fingerprint(model) != recorded:
        raise ValueError(
            f"{settings.store} was embedded with another model ({live.current.model.get('name')}); "
            "serve it with that one (--model)"
        )
    warm_up()  # the image resize's compiled kernels, before the first image query rather than during it
    metrics = Metrics()
    batching = {
        "max_batch": settings.max_batch,
        "max_wait_s": settings.batch_wait_ms / 1000,
        "max_queue": settings.max_queue,
    }
    encoder = query_encoder(model, processor, **batching, on_batch=metrics.on_batch)
    search_batches = searcher(**batching, on_batch=lambda key, size, seconds: metrics.on_batch("search", size, seconds))
    metrics.queue_depth.set_function(lambda: encoder.depth + search_batches.depth)
    cache = settings.thumbnail_cache or str(Path(settings.store) / ".thumbnails")
    thumbnails = Thumbnails(cache, size=settings.thumbnail_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = asyncio.create_task(live.watch(settings.refresh_seconds))
        try:
            yield
        finally:
            watcher.cancel()
            encoder.close()
            search_batches.close()

    app = FastAPI(
        title="torchclip serve",
        version="1",
        description="Search a photo collection (or captions) embedded by `torchclip embed`. See docs/serve.md.",
        docs_url=None,  # Swagger UI would load its scripts from a CDN; the schema is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
    )
    if settings.cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return _error(500, "internal error (the server log has the details)")

    async def queued(pending: Awaitable[Any]) -> Any:
        try:
            return await pending
        except QueueFull as exc:
            metrics.rejected.inc()
            raise ApiError(503, str(exc), {"retry-after": "1"}) from None

    async def vector_of(store: Any, name: str, value: Any, label: str) -> np.ndarray:
        """The normalised embedding of one query field."""
        dim = int(store.model.get("dim") or 0)
        if name == "text":
            vector = await queued(encoder.submit("text", value))
        elif name == "image":
            data = _base64(value, label, settings.max_upload)
            try:
                image = await run_in_threadpool(decode_upload, data)
                pixels = await run_in_threadpool(pixels_of, processor, image)
            except BadImage as exc:
                raise ApiError(400, f"{label}: {exc}") from None
            vector = await queued(encoder.submit("image", pixels))
        elif name == "vector":
            vector = np.asarray(value, dtype=np.float32)
            if dim and vector.shape != (dim,):
                raise ApiError(400, f"{label}: vector has {vector.size} numbers; this store's embeddings have {dim}")
            if not np.isfinite(vector).all() or not np.any(vector):
                raise ApiError(400, f"{label}: vector must be finite and not all zero")
        else:
            vector = await run_in_threadpool(_stored_vector, store, name, value)
            if vector is None:
                raise ApiError(404, f"{label}: no stored item with {name} {_short(value)}")
        vector = np.asarray(vector, dtype=np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    async def ranked_hits(store: Any, end: int, where: str | None, vector: np.ndarray) -> list[Any]:
        """The best hits down to rank `end` and one more (it tells whether a next page exists), by score and
        then id. The store's top k cuts a run of equal scores (duplicate photos) anywhere and orders it
        anyhow, so pages asked with different k would repeat some and skip others; this asks deeper
        until the run the page ends in is whole, so every page continues the one before."""
        depth = end + 1
        while True:
            hits = await queued(search_batches.submit((store, depth, where), vector))
            hits.sort(key=lambda hit: (-hit.score, hit.id))
            if len(hits) < depth or hits[-1].score < hits[end - 1].score:
                return hits
            depth *= 2

    @app.post("/api/search", summary="Search by text, image, stored item, vector, or a weighted combination")
    async def search(query: SearchRequest) -> dict[str, Any]:
        start = time.perf_counter()
        store = live.current
        if query.queries is not None:
            if any(getattr(query, name) is not None for name in QUERY_FIELDS):
                raise ApiError(400, "give either queries or one of text, image, key, id, vector, not both")
            if not query.queries:
                raise ApiError(400, "queries is empty")
            parts = [(*_the_query(part, f"queries[{n}]"), part.weight) for n, part in enumerate(query.queries)]
        else:
            parts = [(*_the_query(query, "search"), 1.0)]
        if query.where is not None and "\x00" in query.where:
            raise ApiError(400, "where contains a NUL character")
        if not all(math.isfinite(weight) for *_, weight in parts):
            raise ApiError(400, "every weight must be a finite number")
        vectors = await asyncio.gather(
            *(
                vector_of(store, name, value, f"queries[{n}]" if query.queries else name)
                for n, (name, value, _) in enumerate(parts)
            )
        )
        combined = sum(weight * vector for (*_, weight), vector in zip(parts, vectors))
        norm = float(np.linalg.norm(combined))
        if norm < 1e-6:
            raise ApiError(400, "the weighted queries cancel out (their combination is zero)")
        end = query.offset + query.k
        try:
            hits = await ranked_hits(store, end, query.where, combined / norm)
        except ValueError as exc:
            raise ApiError(400, f"where: {exc}") from None
        if query.min_score is not None:  # on the scores as shown: a result's own score as min_score keeps it
            hits = [hit for hit in hits if shown_score(hit.score) >= query.min_score]
        more = len(hits) > end
        return {
            "results": [_result(hit, store.kind) for hit in hits[query.offset : end]],
            "total": end if more else len(hits),
            "next_offset": end if more and end <= MAX_OFFSET else None,  # never a page the API would refuse
            "took_ms": round((time.perf_counter() - start) * 1000, 2),
            "generation": store.generation,
        }

    @app.get("/api/item/{item_id}", summary="One stored item's details")
    async def item(item_id: str) -> dict[str, Any]:
        store = live.current
        row = await _row(store, item_id)
        return {**_item(row, store.kind), "generation": store.generation}

    @app.get("/api/thumbnail/{item_id}", summary="A JPEG thumbnail of a stored image (longest side 256 px)")
    async def thumbnail(item_id: str, request: Request) -> Response:
        store = live.current
        row = await _image_row(store, item_id)
        try:
            data, etag = await run_in_threadpool(thumbnails.get, row)
        except Gone as exc:
            raise ApiError(410, str(exc)) from None
        except BadImage as exc:
            raise ApiError(410, f"item {row['id']}: its file is no longer a readable image ({exc})") from None
        headers = {"etag": etag, "cache-control": "private, max-age=86400"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/api/image/{item_id}", summary="A stored image's original file")
    async def original(item_id: str, request: Request) -> Response:
        store = live.current
        row = await _image_row(store, item_id)
        try:
            opened = await run_in_threadpool(open_stored, row)
        except Gone as exc:
            raise ApiError(410, str(exc)) from None
        headers = {"etag": opened.etag, "cache-control": "private, max-age=3600", "content-length": str(opened.size)}
        if request.headers.get("if-none-match") == opened.etag:
            opened.handle.close()
            headers.pop("content-length")
            return Response(status_code=304, headers=headers)
        return StreamingResponse(opened.chunks(), media_type=opened.media_type, headers=headers)

    @app.get("/api/stats", summary="The store: rows, model, generation, index")
    async def stats() -> dict[str, Any]:
        store = live.current
        model_info = {name: store.model.get(name) for name in ("name", "dim", "fingerprint") if name in store.model}
        return {
            "rows": len(store),
            "kind": store.kind,
            "model": model_info,
            "generation": store.generation,
            "index": {key: _plain(value) for key, value in (store.index_info() or {}).items()},
            "queue_depth": encoder.depth + search_batches.depth,
            "auth": bool(settings.token),
        }

    @app.post("/api/login", summary="Sign the page in: checks the token and sets an HttpOnly cookie")
    async def login(request: Request) -> Response:
        if not settings.token:
            return JSONResponse({"ok": True})
        try:
            offered = str(json.loads(await request.body()).get("token", ""))
        except (ValueError, AttributeError):
            raise ApiError(400, 'the body must be JSON: {"token": "..."}') from None
        if not hmac.compare_digest(offered.encode(), settings.token.encode()):
            raise ApiError(401, "wrong token")
        response = JSONResponse({"ok": True})
        response.set_cookie(COOKIE, cookie_value(settings.token), httponly=True, samesite="strict", path="/")
        return response

    @app.get("/healthz", summary="Liveness: 200 while the service answers")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "generation": live.current.generation, "queue_depth": encoder.depth + search_batches.depth}

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(
            (STATIC / "index.html").read_bytes(),
            media_type="text/html; charset=utf-8",
            headers={"cache-control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return Guard(app, settings, metrics)


# ---------------------------------------------------------------------- helpers of the routes


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _base64(value: str, label: str, max_bytes: int) -> bytes:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    if len(value) > math.ceil(max_bytes * 4 / 3) + 4:
        raise ApiError(413, f"{label}: the image is larger than {max_bytes:,} bytes (see --max-upload)")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{label}: not valid base64") from None
    if len(data) > max_bytes:
        raise ApiError(413, f"{label}: the image is larger than {max_bytes:,} bytes (see --max-upload)")
    return data


def _stored_vector(store: Any, name: str, value: Any) -> np.ndarray | None:
    """The vector of the stored item with this key (name "key") or id, or None when there is none."""
    item_id = store.id_of(value) if name == "key" else value
    if item_id is None:
        return None
    try:
        return store.vectors_of([item_id])[0]
    except KeyError:
        return None


def _parse_id(item_id: str) -> int:
    if not (item_id.isascii() and item_id.isdigit() and len(item_id) <= 18):
        raise ApiError(404, f"no stored item with id {_short(item_id)} (ids are whole numbers)")
    return int(item_id)


async def _row(store: Any, item_id: str) -> dict[str, Any]:
    number = _parse_id(item_id)
    try:
        rows = await run_in_threadpool(store.rows, [number])
    except (KeyError, IndexError, ValueError):
        rows = []
    if not rows or rows[0] is None:
        raise ApiError(404, f"no stored item with id {number}")
    return rows[0]


async def _image_row(store: Any, item_id: str) -> dict[str, Any]:
    row = await _row(store, item_id)
    if store.kind != "image":
        raise ApiError(404, f"item {row['id']} is a text; this store holds no images")
    return row


def _item(row: dict[str, Any], kind: str) -> dict[str, Any]:
    out = {name: _plain(value) for name, value in row.items() if name not in ("vector", "text", "caption")}
    caption = row.get("caption") or row.get("text")
    if caption:
        out["caption"] = caption
    if kind == "image":
        out["thumbnail"] = f"/api/thumbnail/{row['id']}"
        out["image"] = f"/api/image/{row['id']}"
    return out


def shown_score(score: float) -> float:
    """A score as the API shows it (6 digits)."""
    return round(float(score), 6)


def _result(hit: Any, kind: str) -> dict[str, Any]:
    """One search result as the API shows it: `_item`'s fields and the score, built in one dict (20 of these
    a query were an eighth of the event loop's time under 16 clients)."""
    out = {name: _plain(value) for name, value in (hit.metadata or {}).items()}
    out["id"], out["key"] = hit.id, hit.key
    if hit.text:
        out["caption"] = hit.text
    if kind == "image":
        out["thumbnail"], out["image"] = f"/api/thumbnail/{hit.id}", f"/api/image/{hit.id}"
    out["score"] = shown_score(hit.score)
    return out


def app_from_environment() -> Guard:
    """The app of one `--workers N` process, from the settings its parent put in TORCHCLIP_SERVE_SETTINGS."""
    return create_app(ServeSettings(**json.loads(os.environ["TORCHCLIP_SERVE_SETTINGS"])))
