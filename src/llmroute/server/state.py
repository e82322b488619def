"""`Gateway`: the loaded router and its dispatcher, kept on ``app.state.gateway``.

A registry reload swaps ``app.state.gateway`` for a new `Gateway`. `PinGateway` hands
each request the gateway that was current when it arrived, and counts it in that
gateway's `InFlight` until its response (a stream included) has gone out, so a request
finishes on the registry it started with and the old clients are closed only after it.
It also counts the process's live API requests (`live_requests`), which the requests of
batches yield to.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from llmroute.deadline import NEVER, Deadline
from llmroute.decide import Router
from llmroute.dispatch import Dispatcher
from llmroute.dispatch.affinity import Affinity
from llmroute.layers.llm_router import LlmRouter
from llmroute.registry.schema import ApiKey
from llmroute.server.auth import Charges, KeyTable, is_api_path
from llmroute.server.errors import GatewayError
from llmroute.state import ResponseCache
from llmroute.state.batches import BatchStore
from llmroute.state.stored_responses import ResponseStore
from llmroute.telemetry.metrics import watch_request
from llmroute.telemetry.recorder import Recorder
from llmroute.telemetry.shadow import ShadowRunner

__all__ = [
    "SETTLE_RESERVE_S",
    "Gateway",
    "InFlight",
    "PinGateway",
    "gateway_of",
    "live_requests",
    "per_app",
    "pin",
    "pinned",
]

_T = TypeVar("_T")
_SCOPE_KEY = "llmroute.gateway"  # the request's pinned gateway, in its ASGI scope
_SHADOWS_S = 5.0  # the longest a closing gateway waits for its shadow requests
# Of a closing gateway's time, what its shadows (and, at shutdown, the steps before
# them) leave to the charges and give-backs: the give-backs' retry past Redis's outage
# pause (`llmroute.state.limits.CLOSE_S`) fits in it.
SETTLE_RESERVE_S = 2.0


class InFlight:
    """How many requests a gateway is serving; `wait_idle` returns when none are."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __enter__(self) -> None:
        self.count += 1
        self._idle.clear()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def idle_within(self, most_s: float) -> None:
        """Return once none are in flight, or after `most_s` (whichever is first)."""
        if self.count == 0 or most_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), most_s)


@dataclass(frozen=True, slots=True, eq=False)
class Gateway:
    router: Router
    dispatcher: Dispatcher
    max_body_bytes: int
    shadow: ShadowRunner | None = None
    llm_router: LlmRouter | None = None
    cache: ResponseCache | None = None
    auth: KeyTable | None = None
    charges: Charges | None = None
    inflight: InFlight = field(default_factory=InFlight, repr=False)
    recorders: dict[str, Recorder] = field(default_factory=dict, repr=False)  # per client key
    affinity: Affinity | None = None
    responses: ResponseStore | None = None  # kept Responses-API responses
    batches: BatchStore | None = None  # files and batches of the Batch API

    async def aclose(self, by: Deadline = NEVER) -> None:
        """Let in-flight shadow requests, budget charges, give-backs and cache writes
        finish (each briefly, and all by `by`), then close the clients. In that order
        of priority: the shadows leave `SETTLE_RESERVE_S` of it to the charges and
        give-backs (a cut shadow gives its slot back too), which come before the cache
        writes: a slot not given back holds a deployment's capacity for its lease, a
        cache write lost costs one miss. Whatever a step cuts, it says."""
        if self.shadow is not None:
            await self.shadow.aclose(by.earlier(SETTLE_RESERVE_S).bounded(_SHADOWS_S))
        if self.charges is not None:
            await self.charges.aclose(by)
        await self.dispatcher.aclose(by)
        if self.cache is not None:
            await self.cache.aclose(by.bounded(self.cache.close_s))
        if self.affinity is not None:
            await self.affinity.aclose()
        if self.responses is not None:
            await self.responses.aclose()
        if self.batches is not None:
            await self.batches.aclose()

    def recorder_for(self, base: Recorder, key: ApiKey | None) -> Recorder:
        """`base` for a request made with `key`: its records name the key, and charge
        its budget when it has one."""
        if key is None:
            return base
        recorder = self.recorders.get(key.name)
        if recorder is None:
            charge = self.charges.charger(key) if self.charges is not None else None
            recorder = self.recorders[key.name] = base.for_client(key.name, charge, key.tags)
        return recorder

    @property
    def version(self) -> str:
        return self.router.version


class PinGateway:
    """ASGI middleware: read ``app.state.gateway`` once per request, before the handler
    runs, and count the request in flight on it (and, for an API ``POST``, among the
    process's live requests) until the response is complete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch_request()
        # No await between reading the current gateway and counting the request on it:
        # a reload that swaps it after this point waits for this request.
        gateway = getattr(scope["app"].state, "gateway", None)
        scope[_SCOPE_KEY] = gateway
        if not isinstance(gateway, Gateway):
            await self.app(scope, receive, send)
            return
        gauge = _in_flight_gauge(scope)
        live = _live(scope)
        with gateway.inflight, live or nullcontext(), gauge or nullcontext():
            await self.app(scope, receive, send)


def _in_flight_gauge(scope: Scope) -> AbstractContextManager[object] | None:
    """``llmroute_requests_in_flight`` for an API request (not the probes and scrapes)."""
    if not is_api_path(scope.get("path", "")):
        return None
    metrics = getattr(scope["app"].state, "metrics", None)
    return metrics.in_flight.track_inprogress() if metrics is not None else None


_NOT_LIVE = ("/v1/files", "/v1/batches")


def _live(scope: Scope) -> InFlight | None:
    """The process's live requests (`live_requests`) for a request that makes an answer
    (a ``POST`` to the API, not the Batch API's own): what batch requests yield to."""
    path: str = scope.get("path", "")
    if scope.get("method") != "POST" or not is_api_path(path) or path.startswith(_NOT_LIVE):
        return None
    return live_requests(scope["app"])


def live_requests(app: Any) -> InFlight:
    """This process's live API requests in flight (one count for the app)."""
    return per_app(app, "live", InFlight)


def per_app(app: Any, name: str, kind: type[_T]) -> _T:
    """``app.state.<name>``, one per app: made by the lifespan, or here (`kind()`) for an
    app whose lifespan did not run (tests that skip it)."""
    state = app.state
    found = getattr(state, name, None)
    if not isinstance(found, kind):
        found = kind()
        setattr(state, name, found)
    return found


def pin(scope: Scope, gateway: Gateway) -> None:
    """Pin `scope` to `gateway`, as `PinGateway` pins a request (for work without one)."""
    scope[_SCOPE_KEY] = gateway


def pinned(scope: Scope) -> Gateway | None:
    """The gateway a request was pinned to (None before the first registry loaded)."""
    gateway = scope.get(_SCOPE_KEY)
    return gateway if isinstance(gateway, Gateway) else None


def gateway_of(request: Request) -> Gateway:
    """The gateway this request was pinned to on arrival (never a newer one)."""
    gateway = request.scope.get(_SCOPE_KEY)
    if not isinstance(gateway, Gateway):
        raise GatewayError(503, "the router is not loaded yet", code="not_ready")
    return gateway
