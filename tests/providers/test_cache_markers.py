"""Prompt-cache markers: carried to Anthropic as breakpoints, removed for OpenAI-protocol
servers unless the provider says ``cache_control: send``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmroute.providers._anthropic_convert import to_messages_request
from llmroute.providers.cache_markers import has_cache_markers, without_cache_markers
from llmroute.registry import ConfigErrors, parse_registry

MARK = {"type": "ephemeral"}


def _marked_body() -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "You are terse."},
                    {"type": "text", "text": "Long shared context.", "cache_control": MARK},
                ],
            },
            {"role": "user", "content": "what is the weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "t1",
                "content": [{"type": "text", "text": "sunny", "cache_control": MARK}],
            },
            {"role": "user", "content": "and tomorrow?", "cache_control": MARK},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "w", "parameters": {"type": "object"}},
                "cache_control": MARK,
            }
        ],
    }


def test_anthropic_gets_each_marker_as_a_breakpoint() -> None:
    payload = to_messages_request("claude", "claude-x", _marked_body())
    assert payload["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Long shared context.", "cache_control": MARK},
    ]
    turns = payload["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    result, question = turns[2]["content"]
    assert result["type"] == "tool_result" and result["cache_control"] == MARK
    assert question == {"type": "text", "text": "and tomorrow?", "cache_control": MARK}
    assert payload["tools"][0]["cache_control"] == MARK


def test_without_markers_anthropic_gets_the_system_as_one_string() -> None:
    body = without_cache_markers(_marked_body())
    payload = to_messages_request("claude", "claude-x", body)
    assert payload["system"] == "You are terse.\n\nLong shared context."
    assert "cache_control" not in str(payload)


def test_markers_are_removed_everywhere_and_nothing_else() -> None:
    body = _marked_body()
    before = copy.deepcopy(body)
    clean = without_cache_markers(body)
    assert body == before  # never mutated
    assert not has_cache_markers(clean) and "cache_control" not in str(clean)
    assert clean["messages"][1] is body["messages"][1]  # unmarked messages are shared
    assert clean["messages"][4] == {"role": "user", "content": "and tomorrow?"}
    plain = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    assert without_cache_markers(plain) is plain


@pytest.mark.parametrize("kind", ["anthropic", "llamacpp"])
def test_cache_control_is_an_openai_providers_setting(kind: str) -> None:
    extra = ', base_url: "http://127.0.0.1:9"' if kind == "anthropic" else ""
    text = f"""
encoder: builtin:static
providers:
  p: {{kind: {kind}{extra}, cache_control: send}}
models:
  m: {{provider: p, model: m.gguf}}
default: {{target: m}}
"""
    with pytest.raises(ConfigErrors) as caught:
        parse_registry(text)
    assert "cache_control" in str(caught.value)
