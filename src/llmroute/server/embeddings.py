"""``POST /v1/embeddings``: passed through to a pool model of kind ``embedding``.

Nothing is routed: embeddings are asked of a named model, and a chat model or a route
cannot answer them. Their cost (the model's input price) counts against the model's and
the client key's budgets and in the cost metrics; the decision log, which records
routing decisions, does not hold them.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmroute.errors import LlmrouteError, shown
from llmroute.server.auth import api_key_of, check_model
from llmroute.server.body import read_json_object
from llmroute.server.errors import GatewayError, gateway_error
from llmroute.server.pool import check_pool
from llmroute.server.state import Gateway, gateway_of
from llmroute.telemetry.service import Telemetry

__all__ = ["embed", "embeddings"]


async def embeddings(request: Request) -> Response:
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    return await embed(request, gateway, body)


async def embed(request: Request, gateway: Gateway, body: dict[str, Any]) -> Response:
    """`body` (an embeddings request) answered by its pool model, charged to the key."""
    name = embedding_model(gateway, body.get("model"))
    check_model(request.scope, body.get("model"), name)
    check_pool(request.scope, name)
    require_input(body)
    headers = {"x-llmroute-model": name}
    try:
        data, usage = await gateway.dispatcher.embed(name, body)
    except LlmrouteError as exc:
        raise gateway_error(exc, headers) from None
    key = api_key_of(request.scope)
    if key is not None and gateway.charges is not None:
        gateway.charges.charge(key, usage.cost_usd, usage.prompt_tokens)
    telemetry = getattr(request.app.state, "telemetry", None)
    if isinstance(telemetry, Telemetry):
        telemetry.metrics.observe_embedding(name, usage)
    return JSONResponse(data, headers=headers)


def embedding_model(gateway: Gateway, name: object) -> str:
    """The pool model of kind ``embedding`` that `name` names (itself, or an alias's
    target): else 400, or 404 when the registry has no such model."""
    if not isinstance(name, str) or not name:
        raise GatewayError(400, "'model' is required and must be a string", param="model")
    registry = gateway.router.loaded.registry
    name = registry.resolve_alias(name)
    models = registry.models
    known = ", ".join(sorted(n for n, m in models.items() if m.kind == "embedding")) or "none"
    model = models.get(name)
    if model is None:
        raise GatewayError(
            404,
            f"no embedding model named {shown(name)}; embedding models: {known}",
            param="model",
            code="model_not_found",
        )
    if model.kind != "embedding":
        raise GatewayError(
            400,
            f"model {shown(name)} is a {model.kind} model; embedding models: {known}",
            param="model",
            code="model_not_embedding",
        )
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
