"""``POST /v1/embeddings``: passed through to a pool model of kind ``embedding``.

Nothing is routed: embeddings are asked of a named model, and a chat model or a route
cannot answer them. Their cost (the model's input price) counts against the model's and
the client key's budgets and in the cost metrics; the decision log, which records
routing decisions, does not hold them. `serve_unrouted` serves reranking
(`server.rerank`) the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmroute.dispatch.usage import Usage, estimated_input_tokens
from llmroute.errors import LlmrouteError, shown
from llmroute.registry.schema import with_article
from llmroute.server.auth import api_key_of, check_model, hold_key_tokens
from llmroute.server.body import read_json_object
from llmroute.server.errors import GatewayError, gateway_error
from llmroute.server.pool import check_pool
from llmroute.server.state import Gateway, gateway_of
from llmroute.telemetry.metrics import EMBEDDINGS_ROUTE
from llmroute.telemetry.service import Telemetry

__all__ = ["embed", "embeddings", "pool_model", "serve_unrouted"]


async def embeddings(request: Request) -> Response:
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    return await embed(request, gateway, body)


async def embed(request: Request, gateway: Gateway, body: dict[str, Any]) -> Response:
    """`body` (an embeddings request) answered by its pool model, charged to the key."""
    name = pool_model(request, gateway, body.get("model"), "embedding")
    require_input(body)
    return await serve_unrouted(
        request,
        gateway,
        body,
        name,
        gateway.dispatcher.embed,
        EMBEDDINGS_ROUTE,
        estimated_input_tokens(body.get("input")),
    )


async def serve_unrouted(
    request: Request,
    gateway: Gateway,
    body: dict[str, Any],
    name: str,
    call: Callable[[str, dict[str, Any]], Awaitable[tuple[dict[str, Any], Usage]]],
    route: str,
    estimated_tokens: int,
) -> Response:
    """`body` answered by the pool model `name` through `call` (the dispatcher's
    `embed` or `rerank`); its `estimated_tokens` held against the key's ``tpm`` while it
    runs (concurrent requests count each other, as chat's do), its cost charged to the
    client key and counted in the metrics under `route`."""
    headers = {"x-llmroute-model": name}
    release = await hold_key_tokens(request.scope, gateway, estimated_tokens)
    try:
        data, usage = await call(name, body)
    except LlmrouteError as exc:
        raise gateway_error(exc, headers) from None
    finally:
        if release is not None:
            release()
    key = api_key_of(request.scope)
    if key is not None and gateway.charges is not None:
        gateway.charges.charge(key, usage.cost_usd, usage.prompt_tokens)
    telemetry = getattr(request.app.state, "telemetry", None)
    if isinstance(telemetry, Telemetry):
        telemetry.metrics.observe_unrouted(route, name, usage, None if key is None else key.name)
    return JSONResponse(data, headers=headers)


def pool_model(request: Request, gateway: Gateway, name: object, kind: str) -> str:
    """The pool model of `kind` that `name` names (itself, or an alias's target), which
    the client key may use: else 400, 404 when the registry has no such model, 403."""
    if not isinstance(name, str) or not name:
        raise GatewayError(400, "'model' is required and must be a string", param="model")
    registry = gateway.router.loaded.registry
    asked, name = name, registry.resolve_alias(name)
    models = registry.models
    known = ", ".join(sorted(n for n, m in models.items() if m.kind == kind)) or "none"
    model = models.get(name)
    if model is None:
        raise GatewayError(
            404,
            f"no {kind} model named {shown(name)}; {kind} models: {known}",
            param="model",
            code="model_not_found",
        )
    if model.kind != kind:
        raise GatewayError(
            400,
            f"model {shown(name)} is {with_article(model.kind)} model; {kind} models: {known}",
            param="model",
            code=f"model_not_{kind}",
        )
    check_model(request.scope, asked, name)
    check_pool(request.scope, name)
    return name


def require_input(body: dict[str, Any]) -> None:
    """OpenAI's shapes: a string, a list of strings, a token array or a list of them."""
    if not _valid_input(body.get("input")):
        raise GatewayError(
            400,
            "'input' is required: a non-empty string, a list of strings, "
            "a list of token ids or a list of such lists",
            param="input",
        )


def _valid_input(value: object) -> bool:
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(item, str) and item for item in value):
        return True
    return _tokens(value) or all(isinstance(item, list) and _tokens(item) for item in value)


def _tokens(value: list[Any]) -> bool:
    return bool(value) and all(type(token) is int for token in value)
