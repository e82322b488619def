"""A Messages client's Anthropic-only parameters, kept apart in the chat body, reach
only the providers that take them: Claude wherever it is served for ``top_k``,
Anthropic's own API alone for ``inference_geo`` (Bedrock and Vertex AI refuse fields
they do not know), no OpenAI-protocol server."""

from __future__ import annotations

import pytest

from llmroute.dispatch.anthropic_only import ANTHROPIC_ONLY, anthropic_only_where_taken

BODY = {"model": "m", "messages": [], ANTHROPIC_ONLY: {"top_k": 5, "inference_geo": "us"}}


@pytest.mark.parametrize(
    ("kind", "sent"),
    [
        ("anthropic", {"top_k": 5, "inference_geo": "us"}),
        ("bedrock", {"top_k": 5}),
        ("vertex", {"top_k": 5}),
        ("openai", {}),
    ],
)
def test_each_provider_gets_what_it_takes(kind: str, sent: dict[str, object]) -> None:
    out = anthropic_only_where_taken(dict(BODY), kind)
    assert ANTHROPIC_ONLY not in out
    assert {k: v for k, v in out.items() if k not in ("model", "messages")} == sent


def test_a_body_without_them_is_left_as_it_is() -> None:
    body = {"model": "m", "messages": []}
    assert anthropic_only_where_taken(body, "anthropic") is body
