"""The types of a ``POST /v1/responses`` body's known fields, checked as OpenAI checks
them before `llmroute.server.responses_convert` reads it: a 400 naming the field
(``param``) before routing, any kept response is read, or any upstream call. The
conversion already refuses malformed ``input``, ``tools``, ``tool_choice`` and
``text.format``; this adds the fields it would otherwise pass on unread (``"temperature":
"hot"``) or read wrong (``"stream": "yes"``, answered whole), and ``metadata`` as OpenAI
bounds it (at most 16 string pairs: `llmroute.server.body.checked_metadata`), and
``tools`` as OpenAI bounds it (at most 128: `llmroute.chat_checks.check_sizes`), before
the conversion walks them. Ranges are the upstream's to say (`llmroute.chat_checks`)."""

from __future__ import annotations

from typing import Any

from llmroute.chat_checks import INVALID_TYPE, check_sizes
from llmroute.errors import InvalidRequest
from llmroute.proxy_fields import body_tags, refuse_proxy_fields
from llmroute.server.body import checked_metadata
from llmroute.server.errors import GatewayError
from llmroute.server.field_checks import (
    BOOLEAN,
    INTEGER,
    LIST,
    NUMBER,
    OBJECT,
    POSITIVE,
    STRING,
    STRING_OR_OBJECT,
    STRINGS,
    Fields,
    check_fields,
)

__all__ = ["check_responses_body"]

_FIELDS: Fields = {
    "temperature": NUMBER,
    "top_p": NUMBER,
    "max_output_tokens": POSITIVE,
    "max_tool_calls": INTEGER,
    "top_logprobs": INTEGER,
    "stream": BOOLEAN,
    "store": BOOLEAN,
    "background": BOOLEAN,
    "parallel_tool_calls": BOOLEAN,
    "instructions": STRING,
    "previous_response_id": STRING,
    "conversation": STRING_OR_OBJECT,
    "include": STRINGS,
    "tools": LIST,
    "tool_choice": STRING_OR_OBJECT,
    "text": OBJECT,
    "reasoning": OBJECT,
    "prompt": OBJECT,
    "stream_options": OBJECT,
    "context_management": LIST,
    "truncation": STRING,
    "user": STRING,
    "safety_identifier": STRING,
    "prompt_cache_key": STRING,
    "prompt_cache_retention": STRING,
    "service_tier": STRING,
}


def check_responses_body(body: dict[str, Any]) -> tuple[str, ...]:
    """The request's tags the body names; 400 (`GatewayError`, its ``param`` the field)
    for a known field of the wrong type, or ``metadata`` or ``tools`` beyond OpenAI's
    bounds (``null`` is a field left out). LiteLLM's own fields are refused as chat
    refuses them (`refuse_proxy_fields`), and its top-level ``tags`` list is the
    request's (`body_tags`); ``metadata`` is OpenAI's own, string values kept with the
    response, so a ``metadata.tags`` that is not a string (a list: LiteLLM's tags) is
    refused naming ``metadata.tags``, saying to send a top-level ``tags``."""
    try:
        check_sizes(body)
        refuse_proxy_fields(body)
        tags = body_tags(body, in_metadata=False)
    except InvalidRequest as exc:
        raise GatewayError(400, exc.message, param=exc.param, code=exc.code) from None
    check_fields(body, _FIELDS)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and "tags" in metadata and not isinstance(metadata["tags"], str):
        raise GatewayError(
            400,
            "'metadata.tags' must be a string, as every value of OpenAI's metadata is: "
            "the request's tags go in a top-level 'tags' list",
            param="metadata.tags",
            code=INVALID_TYPE,
        )
    checked_metadata(metadata)
    return tags
