"""Parameters only Anthropic's API takes (``top_k``; ``inference_geo``, its per-request
data residency), set by a ``/v1/messages`` client: the Messages front
(`llmroute.server.messages_convert`) keeps them apart in the chat body, under
`ANTHROPIC_ONLY`, and each attempt's body has them back at its top level for an
Anthropic provider and not at all for another, whose OpenAI-protocol server refuses
fields it does not know. ``inference_geo`` goes to Anthropic's own API alone: Bedrock and
Vertex AI refuse fields they do not know (their region is where the model runs). (A chat
client's own ``top_k`` is at the top level already and goes on as sent: vLLM and
llama.cpp take it.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmroute.registry.schema import ANTHROPIC_KINDS

__all__ = ["ANTHROPIC_ONLY", "anthropic_only_where_taken"]

ANTHROPIC_ONLY = "anthropic_only"


def anthropic_only_where_taken(body: dict[str, Any], provider_kind: str) -> dict[str, Any]:
    """`body` without `ANTHROPIC_ONLY`, its parameters at the top level for an Anthropic
    provider (where the chat body sets none of the same name). Returns `body` itself
    when it has none."""
    own = body.get(ANTHROPIC_ONLY)
    if own is None:
        return body
    out = {k: v for k, v in body.items() if k != ANTHROPIC_ONLY}
    if provider_kind in ANTHROPIC_KINDS and isinstance(own, Mapping):
        if provider_kind != "anthropic":
            own = {k: v for k, v in own.items() if k not in _FIRST_PARTY_ONLY}
        out = {**own, **out}
    return out


_FIRST_PARTY_ONLY = frozenset({"inference_geo"})  # Anthropic's own API, not Bedrock/Vertex
