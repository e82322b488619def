"""`create_app`: the OpenAI-compatible gateway as a Starlette application.

The lifespan loads the router once and opens one pooled client per provider; both live
on ``app.state.gateway`` and the clients are closed at shutdown.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from llmroute.decide import Router
from llmroute.dispatch import Dispatcher
from llmroute.errors import LlmrouteError
from llmroute.providers import build_providers
from llmroute.server.chat import chat_completions, route_only
from llmroute.server.errors import (
    GatewayError,
    handle_any,
    handle_gateway_error,
    handle_http,
    handle_llmroute_error,
)
from llmroute.server.meta import health, list_models, ready
from llmroute.server.settings import DEFAULT_MAX_BODY_BYTES, MAX_BODY_ENV, REGISTRY_ENV
from llmroute.server.state import Gateway

__all__ = ["app_from_env", "create_app"]


def create_app(registry_path: str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        router = await anyio.to_thread.run_sync(Router.from_yaml, registry_path)
        registry = router.loaded.registry
        dispatcher = Dispatcher(registry, build_providers(registry))
        app.state.gateway = Gateway(router, dispatcher, max_body_bytes)
        try:
            yield
        finally:
            app.state.gateway = None
            await dispatcher.aclose()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/route", route_only, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
        ],
        exception_handlers={
            GatewayError: handle_gateway_error,
            LlmrouteError: handle_llmroute_error,
            HTTPException: handle_http,
            Exception: handle_any,
        },
        lifespan=lifespan,
    )
    app.state.gateway = None
    return app


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and multi-worker serving: the registry path comes
    from ``$LLMROUTE_REGISTRY``, the body limit from ``$LLMROUTE_MAX_BODY_BYTES``."""
    limit = os.environ.get(MAX_BODY_ENV)
    return create_app(
        os.environ[REGISTRY_ENV],
        max_body_bytes=int(limit) if limit else DEFAULT_MAX_BODY_BYTES,
    )
