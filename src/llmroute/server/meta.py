"""``GET /v1/models``, ``GET /health`` and ``GET /ready``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmroute.dispatch import AUTO
from llmroute.dispatch.plan import difficulty_model
from llmroute.server.auth import api_key_of
from llmroute.server.state import gateway_of

__all__ = ["health", "list_models", "ready"]


async def list_models(request: Request) -> Response:
    """OpenAI's list format: ``auto``, then each route, then each pool model (for a
    client key with ``models``, only those; with a ``pool``, no model outside it)."""
    registry = gateway_of(request).router.loaded.registry
    entries = [(AUTO, "llmroute")]
    entries += [(route.name, "llmroute") for route in registry.routes]
    if (router_model := difficulty_model(gateway_of(request).router)) is not None:
        entries.append((router_model, "llmroute"))
    entries += [(name, ",".join(model.provider_names())) for name, model in registry.models.items()]
    key = api_key_of(request.scope)
    if key is not None and key.models is not None:  # only what this client may ask for
        entries = [(i, o) for i, o in entries if i in key.models]
    if key is not None and key.pool is not None:  # and no pool model it may not reach
        entries = [(i, o) for i, o in entries if i not in registry.models or i in key.pool]
    data = [{"id": i, "object": "model", "created": 0, "owned_by": o} for i, o in entries]
    return JSONResponse({"object": "list", "data": data})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    gateway = gateway_of(request)  # 503 until the lifespan has loaded the router
    return JSONResponse({"status": "ready", "registry_version": gateway.router.version})
