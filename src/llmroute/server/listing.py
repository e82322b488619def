"""One page of a list, as OpenAI's list endpoints answer (``input_items`` of a response,
the items of a conversation): newest first unless ``order=asc``, at most ``limit``
(1–100, default 20), after the item named by ``after``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from llmroute.server.errors import GatewayError

__all__ = ["MAX_LIMIT", "listed", "page"]

MAX_LIMIT = 100


def listed(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def page(items: list[dict[str, Any]], request: Request, owner: str) -> dict[str, Any]:
    """The page of `items` (oldest first, each with an ``id``) the request's query asks
    for; a 400 naming the parameter for a bad one (`owner` names whose items they are)."""
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise GatewayError(400, "'order' must be asc or desc", param="order")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise GatewayError(400, f"'limit' must be an integer from 1 to {MAX_LIMIT}", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise GatewayError(400, f"'after' names no item of {owner}", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    return listed(ordered[:limit], has_more=len(ordered) > limit)
