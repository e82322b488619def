"""`create_app`: the OpenAI-compatible gateway as a Starlette application.

The lifespan loads the router and opens one pooled client per provider; both live on
``app.state.gateway``, are replaced when the registry is reloaded
(`llmroute.server.reload`), and are closed at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from llmroute.deadline import Deadline
from llmroute.errors import LlmrouteError
from llmroute.server.auth import KEY_INFO_PATH, RequireKey
from llmroute.server.background import BackgroundRuns
from llmroute.server.batch_sweep import sweep_batches
from llmroute.server.batches import BATCHES_PATH, BatchRuns, batch, batches
from llmroute.server.browsers import browser_middleware
from llmroute.server.chat import chat_completions, route_only
from llmroute.server.completions import completions
from llmroute.server.conversations import (
    CONVERSATIONS_PATH,
    conversation,
    conversation_item,
    conversations,
)
from llmroute.server.cors import cors_middleware
from llmroute.server.dashboard import Dashboard, gateway_live, gateway_log_view
from llmroute.server.embeddings import embeddings
from llmroute.server.errors import (
    AnswerUnhandled,
    GatewayError,
    handle_client_gone,
    handle_gateway_error,
    handle_http,
    handle_llmroute_error,
)
from llmroute.server.expect import CloseUnasked
from llmroute.server.feedback import feedback
from llmroute.server.files import FILES_PATH, file, file_content, files
from llmroute.server.logs import LOG_FORMATS, join_uvicorns_logging
from llmroute.server.messages import count_tokens, messages
from llmroute.server.messages_convert import COUNT_TOKENS_PATH, MESSAGES_PATH
from llmroute.server.meta import MODELS_PATH, health, key, list_models, ready, retrieve_model
from llmroute.server.metrics import metrics_endpoint
from llmroute.server.one_host import OneHost
from llmroute.server.reload import Prepared, assemble_router, fingerprint, reloading
from llmroute.server.rerank import RERANK_PATHS, rerank
from llmroute.server.responses import input_tokens, responses, stored_response
from llmroute.server.responses_convert import RESPONSES_PATH
from llmroute.server.root_path import StripRootPath
from llmroute.server.settings import (
    LOG_FORMAT_ENV,
    LOG_REQUESTS_ENV,
    REGISTRY_ENV,
    ServeSettings,
    env_choice,
    env_flag,
)
from llmroute.server.shutdown import AnswerCutRequests
from llmroute.server.state import SETTLE_RESERVE_S, Gateway, PinGateway
from llmroute.server.watched_send import StampRequestIds
from llmroute.server.workers import KILL_MARGIN_S
from llmroute.telemetry.metrics import GatewayMetrics
from llmroute.telemetry.service import Telemetry
from llmroute.telemetry.tracing import tracing_from_env

__all__ = ["app_from_env", "create_app"]

log = logging.getLogger("llmroute.server")

_UNWIND_S = 5.0
# The shutdown's one deadline, from the graceful timeout's end: every step after it,
# the decision log's close (the last) included, ends within it, so a worker says what it
# could not finish before its supervisor kills it (`KILL_MARGIN_S` after that end).
# Each step takes its own bound or what is left less what the steps after it keep:
# the decision log keeps `_LOG_RESERVE_S` (the traces' export shares it, side by side),
# the charges and give-backs before it `SETTLE_RESERVE_S` (docs/gateway.md, "Stopping").
_CLOSE_S = KILL_MARGIN_S - 1.0
_LOG_RESERVE_S = 2.0
_LOG_CLOSE_MIN_S = 0.5  # should the steps before it overrun (a Redis call under way)


def create_app(
    registry_path: str, settings: ServeSettings | None = None, first: Prepared | None = None
) -> Starlette:
    """The gateway for the registry at `registry_path`, reloaded when the file changes;
    `first`, its first load when `llmroute serve` made it before starting."""
    serve_settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.metrics = metrics = GatewayMetrics()
        app.state.tracing = tracing = tracing_from_env()
        app.state.background = runs = BackgroundRuns()
        app.state.batch_runs = batch_runs = BatchRuns()
        try:
            async with reloading(app.state, registry_path, serve_settings, first) as reloader:
                settings = reloader.current.router.loaded.registry.telemetry
                app.state.telemetry = await anyio.to_thread.run_sync(
                    Telemetry.open, settings, metrics
                )
                sweep = asyncio.create_task(sweep_batches(app), name="llmroute batch sweep")
                try:
                    yield
                finally:
                    closing = Deadline.within(_CLOSE_S)
                    settles_by = closing.earlier(_LOG_RESERVE_S)
                    early = settles_by.earlier(SETTLE_RESERVE_S)
                    reloader.stopping(settles_by)
                    sweep.cancel()
                    # each run gets half of what is left of those 5 s to finish, then
                    # the other half to end once cut
                    grace_s = early.bounded(_UNWIND_S) / 2
                    await asyncio.gather(runs.aclose(grace_s), batch_runs.aclose(grace_s))
                    await _unwound(app.state.gateway, early.bounded(_UNWIND_S))
                    # the gateways' background work first: their shadows write to the log
                    await reloader.aclose(settles_by)
                    # the current log (a reload may have replaced the first) and, beside
                    # it, the spans still to export: each on threads of its own
                    left_s = max(_LOG_CLOSE_MIN_S, closing.left())
                    await asyncio.gather(
                        app.state.telemetry.aclose(left_s),
                        anyio.to_thread.run_sync(tracing.shutdown, left_s),
                    )
        finally:
            tracing.shutdown(_LOG_CLOSE_MIN_S)  # a start that failed: no spans (else a no-op)

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        *(Route(path, rerank, methods=["POST"]) for path in RERANK_PATHS),
        Route("/v1/completions", completions, methods=["POST"]),
        Route(MESSAGES_PATH, messages, methods=["POST"]),
        Route(COUNT_TOKENS_PATH, count_tokens, methods=["POST"]),
        Route(RESPONSES_PATH, responses, methods=["POST"]),
        Route(RESPONSES_PATH + "/input_tokens", input_tokens, methods=["POST"]),
        Route(RESPONSES_PATH + "/{rest:path}", stored_response, methods=["GET", "POST", "DELETE"]),
        Route(CONVERSATIONS_PATH, conversations, methods=["POST"]),
        Route(
            CONVERSATIONS_PATH + "/{conversation_id}",
            conversation,
            methods=["GET", "POST", "DELETE"],
        ),
        Route(
            CONVERSATIONS_PATH + "/{conversation_id}/items", conversation, methods=["GET", "POST"]
        ),
        Route(
            CONVERSATIONS_PATH + "/{conversation_id}/items/{item_id}",
            conversation_item,
            methods=["GET", "DELETE"],
        ),
        Route(FILES_PATH, files, methods=["GET", "POST"]),
        Route(FILES_PATH + "/{file_id}", file, methods=["GET", "DELETE"]),
        Route(FILES_PATH + "/{file_id}/content", file_content, methods=["GET"]),
        Route(BATCHES_PATH, batches, methods=["GET", "POST"]),
        Route(BATCHES_PATH + "/{batch_id}", batch, methods=["GET"]),
        Route(BATCHES_PATH + "/{batch_id}/{action}", batch, methods=["POST"]),
        Route("/v1/route", route_only, methods=["POST"]),
        Route("/v1/feedback", feedback, methods=["POST"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route(MODELS_PATH, list_models, methods=["GET"]),
        Route(KEY_INFO_PATH, key, methods=["GET"]),
        Route(MODELS_PATH + "/{model:path}", retrieve_model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
    ]
    if serve_settings.dashboard:
        routes += Dashboard(gateway_log_view, gateway_live).routes()
    app = Starlette(
        routes=routes,
        exception_handlers={
            GatewayError: handle_gateway_error,
            LlmrouteError: handle_llmroute_error,
            HTTPException: handle_http,
            ClientDisconnect: handle_client_gone,
        },
        middleware=[
            # outermost first; the prefix off before any layer reads the path
            *_root_path_middleware(serve_settings.root_path),
            Middleware(CloseUnasked),  # outside the request ids' watcher, which inner ones share
            Middleware(StampRequestIds),  # CORS's own answers (a preflight's) too
            Middleware(OneHost),  # before any layer reads the Host
            *cors_middleware(serve_settings.cors_origins),
            Middleware(AnswerUnhandled),
            *browser_middleware(
                serve_settings.cors_origins, serve_settings.bind_host, serve_settings.allowed_hosts
            ),
            Middleware(AnswerCutRequests),
            Middleware(PinGateway),
            Middleware(RequireKey),
        ],
        lifespan=lifespan,
    )
    # a path with a stray trailing / is a 404 that names the path to use
    # (`handle_http`), not Starlette's 307 to an absolute URL built from the request's
    # Host: behind a proxy that names the gateway's own address and drops the prefix
    app.router.redirect_slashes = False
    app.state.gateway = None
    app.state.telemetry = None
    app.state.serve_settings = serve_settings
    app.state.started_at = time.time()
    return app


def _root_path_middleware(root_path: str | None) -> list[Middleware]:
    return [] if root_path is None else [Middleware(StripRootPath, prefix=root_path)]


async def _unwound(gateway: Gateway | None, within_s: float) -> None:
    """Wait (`within_s` at most) for the requests that uvicorn cancelled when its
    graceful timeout ran out to finish unwinding: each logs itself and charges what it
    cost on its way out, and the decision log must still be open for that."""
    if gateway is None:
        return
    with anyio.move_on_after(within_s):
        await gateway.inflight.wait_idle()
    if gateway.inflight.count:
        log.warning(
            "stopping: %d request(s) cut by the graceful timeout still unwinding after "
            "%g s: their decision records and charges are lost unless they end before "
            "the decision log closes",
            gateway.inflight.count,
            round(within_s, 2),
        )


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and multi-worker serving: the registry path comes
    from ``$LLMROUTE_REGISTRY``, the rest from `ServeSettings.from_env`. A variable unset
    or malformed stops the start with one line naming it (``error: $LLMROUTE_ROOT_PATH
    'v1': ...``) and exit status 1, as ``llmroute serve`` says it, not uvicorn's
    traceback of the factory. The first load is done here, as ``llmroute serve`` does it
    before uvicorn starts, so that a registry that cannot be served (bad YAML, a missing
    artifact, failing routing cases) says so in one line too, not as a lifespan
    traceback."""
    registry = os.environ.get(REGISTRY_ENV)
    if not registry:
        raise SystemExit(f"error: ${REGISTRY_ENV} is not set: the registry file to serve")
    try:
        settings = ServeSettings.from_env()
        requests = env_flag(LOG_REQUESTS_ENV)
        fmt = env_choice(LOG_FORMAT_ENV, LOG_FORMATS)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    join_uvicorns_logging(requests=requests, fmt=fmt)
    return create_app(registry, settings, _first_load(registry, settings))


def _first_load(path: str, settings: ServeSettings) -> Prepared:
    from llmroute.registry import load_registry
    from llmroute.state.stores import check_registry_urls

    try:
        seen = fingerprint(path)
        loaded = load_registry(path)
        check_registry_urls(loaded.registry)
        router, gates = assemble_router(loaded, None, settings.encoder_threads, settings.cases)
    except LlmrouteError as exc:
        raise SystemExit(f"error: {exc}") from None
    return Prepared(seen, router, gates)
