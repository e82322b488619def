"""The web dashboard: ``GET /dashboard`` (the page), ``/dashboard/app.js``,
``/dashboard/app.css`` and ``/dashboard/data?since=1h`` (its JSON).

The same `Dashboard` serves inside the gateway (the decision log it writes, plus the
live state of this process: registry version, requests in flight, circuit breakers)
and on its own (`llmroute dashboard`: any decision log, no live state), through the
two callables it is given. The page is static and self-contained (no CDN, no inline
script: it runs under ``Content-Security-Policy: default-src 'self'``).

Reading the log and building the payload run in a worker thread; one payload per
(window, log, registry version) is kept for `ttl_s` seconds, so several open pages
cost one read. No prompt text is served (see `llmroute.telemetry.dashboard`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from llmroute.errors import TelemetryError
from llmroute.registry.schema import Registry
from llmroute.server.browsers import browser_middleware
from llmroute.server.errors import (
    AnswerUnhandled,
    GatewayError,
    handle_gateway_error,
    handle_http,
)
from llmroute.server.metrics import budget_readings
from llmroute.server.one_host import OneHost
from llmroute.server.root_path import StripRootPath, asked_path
from llmroute.server.settings import ServeSettings
from llmroute.server.state import gateway_of
from llmroute.server.watched_send import StampRequestIds
from llmroute.state.stores import MemoryStore
from llmroute.telemetry.dashboard import (
    DEFAULT_MAX_ROWS,
    Grid,
    Rows,
    baseline_window,
    dashboard_data,
    empty_dashboard,
)
from llmroute.telemetry.service import Telemetry
from llmroute.telemetry.store.base import Store
from llmroute.telemetry.store.url import LOG_OFF_HOW, mask_url
from llmroute.telemetry.windows import Window, WindowError, parse_window

__all__ = [
    "Dashboard",
    "LogView",
    "breaker_rows",
    "create_log_dashboard",
    "gateway_live",
    "gateway_log_view",
    "missing_log",
]

DEFAULT_TTL_S = 5.0
_LOG_OFF = f"the decision log is off {LOG_OFF_HOW}"
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors, for browsers that predate it
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# the data (and its errors): JSON that nothing should render, frame or keep
_DATA_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_ASSETS = {"app.js": ("dashboard.js", "text/javascript"), "app.css": ("dashboard.css", "text/css")}


@dataclass(frozen=True, slots=True)
class LogView:
    """What the dashboard reads: the store (None with `message` saying why there is
    none), its URL with any password masked, and the registry that prices models and
    sets the drift bounds (None: no prices, default bounds)."""

    store: Store | None
    url: str | None
    registry: Registry | None
    message: str | None = None


@functools.cache
def _static(name: str) -> str:
    return (importlib.resources.files("llmroute.server") / "static" / name).read_text("utf-8")


def missing_log(store: Store) -> str | None:
    """Why `store` has nothing to read yet (a SQLite file not created, no tables), or
    None. Checking a SQLite file does not create it."""
    path = getattr(store, "path", None)
    if isinstance(path, str) and path != ":memory:" and not Path(path).exists():
        return f"no decision log at {path} yet"
    if store.schema_version() == 0:
        return "the decision log has no tables yet (run `llmroute db upgrade`)"
    return None


def breaker_rows(pools: Any) -> list[dict[str, Any]]:
    """One row per (model, deployment) from a dispatcher's `Deployments.pools()`."""
    rows = []
    for model, pool in pools.items():
        for deployment in pool.deployments:
            snapshot = deployment.breaker.snapshot()
            rows.append(
                {
                    "model": model,
                    "provider": deployment.provider_name,
                    "upstream": deployment.upstream,
                    "state": snapshot["state"],
                    "consecutive_failures": snapshot["consecutive_failures"],
                    "window_requests": snapshot["window_requests"],
                    "window_failures": snapshot["window_failures"],
                }
            )
    return rows


def _read(view: LogView, window: Window, max_rows: int) -> dict[str, Any]:
    """Read both windows and build the payload (runs in a worker thread)."""
    store = view.store
    assert store is not None
    why = missing_log(store)
    if why is not None:
        return empty_dashboard(window, url=view.url, message=why, max_rows=max_rows)
    previous = baseline_window(window)
    grid = Grid.of(window)
    buckets = store.decision_buckets(window.since, window.until, grid.start, grid.step)
    current = Rows(
        store.decisions(window.since, window.until, newest=max_rows, details=False),
        sum(b.requests for b in buckets),
        store.feedback(window.since, window.until),
        store.shadows(window.since, window.until),
        buckets,
        store.client_totals(window.since, window.until),
        store.tag_totals(window.since, window.until),
        store.api_totals(window.since, window.until),
    )
    before = store.decisions(previous.since, previous.until, newest=max_rows, details=False)
    in_before = max(len(before), store.count_decisions(previous.since, previous.until))
    return dashboard_data(
        current,
        Rows(before, in_before),
        view.registry,
        window=window,
        url=view.url or store.url,
        max_rows=max_rows,
    )


class Dashboard:
    """The dashboard's routes, reading through `log_view` and `live` per request."""

    def __init__(
        self,
        log_view: Callable[[Request], LogView],
        live: Callable[[Request], Awaitable[dict[str, Any] | None]],
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log_view = log_view
        self._live = live
        self._max_rows = max_rows
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: dict[tuple[object, ...], tuple[float, dict[str, Any]]] = {}
        self._locks: dict[tuple[object, ...], asyncio.Lock] = {}

    def routes(self, prefix: str = "/dashboard") -> list[Route]:
        return [
            Route(prefix, self.page, methods=["GET"]),
            Route(f"{prefix}/", self.page, methods=["GET"]),
            Route(f"{prefix}/data", self.data, methods=["GET"]),
            Route(f"{prefix}/{{asset}}", self.asset, methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        # relative URLs: behind a proxy that serves the gateway under a path prefix
        # (`location /llm/ { proxy_pass http://gateway/; }`) the browser asks for
        # /llm/dashboard, which the gateway sees as /dashboard; an absolute
        # /dashboard/app.js would go to the proxy's root. At /dashboard the files are
        # dashboard/…, at /dashboard/ they are ./…
        path = request.url.path
        base = "." if path.endswith("/") else path.rsplit("/", 1)[-1]
        html = _static("dashboard.html").replace("{{ASSET_BASE}}", base)
        html = html.replace("{{DATA_URL}}", f"{base}/data")
        return Response(html, media_type="text/html", headers=_HEADERS)

    async def asset(self, request: Request) -> Response:
        found = _ASSETS.get(request.path_params["asset"])
        if found is None:
            raise GatewayError(
                404, f"no such dashboard file: {asked_path(request.scope, request.url.path)}"
            )
        name, media_type = found
        return Response(_static(name), media_type=media_type, headers=_HEADERS)

    async def data(self, request: Request) -> Response:
        since = request.query_params.get("since", "1h")
        try:
            window = parse_window(since)
        except WindowError as exc:
            raise GatewayError(
                400, str(exc), param="since", code="invalid_window", headers=_DATA_HEADERS
            ) from None
        view = self._log_view(request)
        payload = dict(await self._payload(view, window))
        payload["generated_at"] = time.time()
        payload["live"] = await self._live(request)
        return JSONResponse(payload, headers=_DATA_HEADERS)

    async def _payload(self, view: LogView, window: Window) -> dict[str, Any]:
        if view.store is None:
            message = view.message or _LOG_OFF
            return empty_dashboard(window, url=None, message=message, max_rows=self._max_rows)
        key = (window.text, id(view.store), id(view.registry))
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one read per window at a time; pages waiting share its result
            hit = self._cached.get(key)
            if hit is not None and self._clock() - hit[0] < self._ttl_s:
                return hit[1]
            try:
                payload = await anyio.to_thread.run_sync(_read, view, window, self._max_rows)
            except TelemetryError as exc:
                raise GatewayError(
                    503, str(exc), code="telemetry_unavailable", headers=_DATA_HEADERS
                ) from None
            now = self._clock()
            self._cached = {k: v for k, v in self._cached.items() if now - v[0] < self._ttl_s}
            self._cached[key] = (now, payload)
            self._locks = {k: v for k, v in self._locks.items() if k in self._cached or v.locked()}
            return payload


def gateway_log_view(request: Request) -> LogView:
    """The gateway's own decision log and the registry of the request's gateway."""
    registry = gateway_of(request).router.loaded.registry
    telemetry = getattr(request.app.state, "telemetry", None)
    store = telemetry.store if isinstance(telemetry, Telemetry) else None
    if store is None:
        return LogView(None, None, registry, _LOG_OFF)
    return LogView(store, store.url, registry)


def _cache_facts(store: object) -> dict[str, Any]:
    if isinstance(store, MemoryStore):
        return {
            "store": "memory",
            "url": "memory",
            "entries": len(store),
            "bytes": store.size_bytes,
        }
    return {"store": "redis", "url": getattr(store, "url", None)}


async def gateway_live(request: Request) -> dict[str, Any]:
    """This process's side of the gateway: what no log holds (its breakers, and the
    budgets as counted now)."""
    gateway = gateway_of(request)
    settings = getattr(request.app.state, "serve_settings", None)
    cache = gateway.cache
    return {
        "registry_version": gateway.version,
        "pid": os.getpid(),
        "started_at": getattr(request.app.state, "started_at", None),
        "in_flight": max(0, gateway.inflight.count - 1),  # not this request
        "workers": settings.workers if isinstance(settings, ServeSettings) else 1,
        "cache": None if cache is None else _cache_facts(cache.store),
        "breakers": breaker_rows(gateway.dispatcher.deployments.pools()),
        "breakers_shared": _shared_breakers(gateway.router.loaded.registry),
        "budgets": [asdict(reading) for reading in await budget_readings(gateway)],
    }


def _shared_breakers(registry: Registry) -> str | None:
    """Where breaker openings are shared (password masked), or None."""
    breaker = registry.dispatch.breaker
    return mask_url(breaker.url) if breaker.enabled and breaker.url != "memory" else None


def create_log_dashboard(
    url: str,
    registry: Registry | None,
    *,
    bind_host: str | None = None,
    allowed_hosts: Sequence[str] = (),
    root_path: str | None = None,
) -> Starlette:
    """`llmroute dashboard`: the page over the decision log at `url`, with no gateway
    (``live`` is null). The store is opened lazily and closed at shutdown. Served as
    the gateway serves it: under `root_path` too (`StripRootPath`), and on a loopback
    `bind_host` only to loopback names and `allowed_hosts` (the gateway's Host check,
    `llmroute.server.browsers`: each refusal logged; no origin check, nothing to
    count them in)."""
    from llmroute.telemetry.store import open_store
    from llmroute.telemetry.store.url import ANSWER_TIMEOUT_S

    store = open_store(url, answer_timeout_s=ANSWER_TIMEOUT_S)  # a server: never hangs
    view = LogView(store, store.url, registry)

    async def home(request: Request) -> Response:
        return RedirectResponse("dashboard")  # relative: kept under a proxy's prefix

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(store.close)

    async def no_gateway(request: Request) -> None:
        return None

    dashboard = Dashboard(lambda request: view, no_gateway)
    web = Starlette(
        routes=[Route("/", home), Route("/health", health), *dashboard.routes()],
        exception_handlers={
            GatewayError: handle_gateway_error,
            HTTPException: handle_http,
        },
        middleware=[  # outermost first, as the gateway's
            *([] if root_path is None else [Middleware(StripRootPath, prefix=root_path)]),
            Middleware(StampRequestIds),
            Middleware(OneHost),
            Middleware(AnswerUnhandled),
            *browser_middleware(("*",), bind_host, allowed_hosts, server="dashboard"),
        ],
        lifespan=lifespan,
    )
    web.router.redirect_slashes = False  # a stray / is a 404 naming the path, as the gateway's
    web.state.log_url = store.url
    return web
