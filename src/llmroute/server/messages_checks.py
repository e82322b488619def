"""The types of a ``POST /v1/messages`` body's known fields, checked as Anthropic checks
them before `llmroute.server.messages_convert` reads it: a 400 in Anthropic's shape
naming the field, before routing or any upstream call. The conversion already refuses
malformed ``messages``, ``system``, ``tools``, ``tool_choice``, ``thinking`` and
``output_config``; this adds the fields it would otherwise pass on unread (``"temperature":
"hot"``, which came back as the upstream's refusal) or read wrong (``"stream": "yes"``,
answered whole). ``temperature`` and ``top_p`` must lie in 0..1: a fixed rule of
Anthropic's API (every model refuses 1.5), which a client of that API wrote for, whatever
model serves it. Other ranges are the upstream's to say (`llmroute.server.chat_checks`)."""

from __future__ import annotations

from typing import Any

from llmroute.errors import InvalidRequest
from llmroute.proxy_fields import body_tags, refuse_proxy_fields
from llmroute.server.errors import GatewayError
from llmroute.server.field_checks import (
    BOOLEAN,
    INTEGER,
    OBJECT,
    STRING,
    STRINGS,
    Fields,
    check_fields,
    unit_number,
)

__all__ = ["check_messages_body"]

_UNIT = (unit_number, "a number from 0 to 1")
_FIELDS: Fields = {
    "temperature": _UNIT,
    "top_p": _UNIT,
    "top_k": INTEGER,
    "stream": BOOLEAN,
    "stop_sequences": STRINGS,
    "metadata": OBJECT,
    "service_tier": STRING,
    "speed": STRING,
    "inference_geo": STRING,
    "diagnostics": OBJECT,
    "cache_control": OBJECT,
}


def check_messages_body(body: dict[str, Any]) -> tuple[str, ...]:
    """The request's tags the body names; 400 (`GatewayError`, its ``param`` the field)
    for a known field of the wrong type (``null`` is a field left out). LiteLLM's own
    fields (``fallbacks``, ``api_key``, ...) are refused as chat refuses them
    (`refuse_proxy_fields`), not dropped unsaid, and its tags, a top-level ``tags`` or
    ``metadata.tags`` list, are the request's as a chat's are (`body_tags`): Anthropic's
    ``metadata`` holds only ``user_id``, and is sent to no model but as the end user."""
    check_fields(body, _FIELDS)
    try:
        refuse_proxy_fields(body)
        tags = body_tags(body)
    except InvalidRequest as exc:
        raise GatewayError(400, exc.message, param=exc.param, code=exc.code) from None
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata.get("user_id", ""), str | None):
        raise GatewayError(400, "'metadata.user_id' must be a string", param="metadata.user_id")
    return tags
