"""``GET /v1/models`` (and ``/v1/models/{id}``), ``GET /v1/key``, ``GET /health`` and
``GET /ready``."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from llmroute.dispatch import AUTO
from llmroute.dispatch.plan import difficulty_model
from llmroute.errors import shown
from llmroute.registry import Registry
from llmroute.server.auth import api_key_of, key_info
from llmroute.server.errors import GatewayError, not_an_endpoint, speaks_anthropic
from llmroute.server.root_path import asked_path
from llmroute.server.state import gateway_of

__all__ = [
    "MODELS_PATH",
    "health",
    "key",
    "list_models",
    "listed_for",
    "ready",
    "retrieve_model",
]

MODELS_PATH = "/v1/models"

_ANTHROPIC_MAX_LIMIT = 1000


async def key(request: Request) -> Response:
    """``GET /v1/key``: the presented client key's name, what it may ask for and reach,
    its limits and what it has used of them (its spending this period: how much budget
    is left). Counted against neither its rpm nor its budget, so a client over its
    budget can still see why."""
    presented = api_key_of(request.scope)
    if presented is None:
        raise GatewayError(
            404,
            "this gateway has no client keys (its registry has no auth section)",
            code="not_found",
        )
    limits = gateway_of(request).dispatcher.limits
    return JSONResponse(await key_info(presented, limits))


async def list_models(request: Request) -> Response:
    """OpenAI's list format: ``auto``, then each route, then each pool model (for a
    client key with ``models``, only those; with a ``pool``, no model outside it). To
    an Anthropic client, Anthropic's: the same ids but embedding and rerank models (and
    aliases of them), which its tools would offer as chat models, a page of them
    (`_anthropic_page`)."""
    if speaks_anthropic(request.scope):
        return JSONResponse(_anthropic_page([i for i, _ in _entries(request)], request))
    data = [_model_object(i, o) for i, o in _entries(request)]
    return JSONResponse({"object": "list", "data": data})


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{id}``: one entry of the list (404 ``model_not_found`` for a name
    the list does not hold for this client), as OpenAI's ``models.retrieve`` expects,
    or Anthropic's when its client asks (the list it sees: no embedding or rerank model)."""
    wanted = request.path_params["model"]
    if not wanted:  # GET /v1/models/: a stray trailing / on the list, as elsewhere
        raise GatewayError(404, not_an_endpoint(request, MODELS_PATH))
    owner = dict(_entries(request)).get(wanted)
    if owner is None:
        raise GatewayError(
            404,
            f"the model {shown(wanted)} does not exist: "
            f"GET {asked_path(request.scope, MODELS_PATH)} lists what you may use",
            param="model",
            code="model_not_found",
        )
    if speaks_anthropic(request.scope):
        return JSONResponse(_anthropic_model(wanted))
    return JSONResponse(_model_object(wanted, owner))


def _entries(request: Request) -> list[tuple[str, str]]:
    """(id, owner) of every model value this request's client may send; to an Anthropic
    client, only those a chat request may (its list is of chat models)."""
    registry = gateway_of(request).router.loaded.registry
    entries = [(AUTO, "llmroute")]
    entries += [(route.name, "llmroute") for route in registry.routes]
    if (router_model := difficulty_model(gateway_of(request).router)) is not None:
        entries.append((router_model, "llmroute"))
    entries += [(name, ",".join(model.provider_names())) for name, model in registry.models.items()]
    aliases = registry.exact_aliases()
    entries += [(alias, "llmroute") for alias in aliases]
    if api_key_of(request.scope) is not None:
        listed = set(listed_for(request.scope, registry, (i for i, _ in entries)))
        entries = [(i, o) for i, o in entries if i in listed]
    if speaks_anthropic(request.scope):
        models = registry.models
        entries = [
            (i, o)
            for i, o in entries
            if (target := aliases.get(i, i)) not in models or models[target].kind == "chat"
        ]
    return entries


def listed_for(scope: Scope, registry: Registry, ids: Iterable[str]) -> list[str]:
    """The ``model`` values of `ids` the request's client key may send, as ``GET
    /v1/models`` lists them for it: only those its ``models`` name (or an alias whose
    target they name), and no pool model, nor alias of one, outside its ``pool``; all of
    them without a key, in the order given."""
    kept = list(ids)
    key = api_key_of(scope)
    if key is None:
        return kept
    aliases = registry.exact_aliases()
    if key.models is not None:  # only what this client may ask for
        allowed = key.models
        kept = [i for i in kept if i in allowed or aliases.get(i) in allowed]
    if key.pool is not None:  # and no pool model it may not reach
        pool, models = key.pool, registry.models
        kept = [i for i in kept if (target := aliases.get(i, i)) not in models or target in pool]
    return kept


def _model_object(model_id: str, owner: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}


def _anthropic_model(model_id: str) -> dict[str, object]:
    """Anthropic's ``ModelInfo``; the gateway knows no release date (the epoch, as
    Anthropic's API says an unknown one) nor a name but the id."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id,
        "created_at": "1970-01-01T00:00:00Z",
        "lifecycle": "active",
    }


def _anthropic_page(ids: list[str], request: Request) -> dict[str, object]:
    """The page of `ids` Anthropic's query asks for: ``limit`` (1 to 1000, default 20)
    after ``after_id`` or before ``before_id``, with ``has_more`` in that direction and
    the cursors for the next page (``first_id``, ``last_id``)."""
    query = request.query_params
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= _ANTHROPIC_MAX_LIMIT:
        raise GatewayError(400, f"limit: must be an integer from 1 to {_ANTHROPIC_MAX_LIMIT}")
    after, before = query.get("after_id"), query.get("before_id")
    for name, cursor in (("after_id", after), ("before_id", before)):
        if cursor is not None and cursor not in ids:
            raise GatewayError(400, f"{name}: {shown(cursor)} is not a model of this list")
    if after is not None:
        rest = ids[ids.index(after) + 1 :]
        chosen, has_more = rest[:limit], len(rest) > limit
    elif before is not None:
        rest = ids[: ids.index(before)]
        chosen, has_more = rest[-limit:], len(rest) > limit
    else:
        chosen, has_more = ids[:limit], len(ids) > limit
    return {
        "data": [_anthropic_model(i) for i in chosen],
        "has_more": has_more,
        "first_id": chosen[0] if chosen else None,
        "last_id": chosen[-1] if chosen else None,
    }


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    gateway = gateway_of(request)  # 503 until the lifespan has loaded the router
    return JSONResponse({"status": "ready", "registry_version": gateway.router.version})
