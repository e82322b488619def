"""Tool call ids longer than OpenAI's 40 characters reach an OpenAI-protocol upstream cut,
the same in the call and its result: `llmroute serve` as a subprocess, the official
`openai` client in front, the fake OpenAI-protocol upstream behind refusing a longer id
as OpenAI does (400 "string too long" on ``messages[].tool_calls[].id``). A conversation
that started on another provider (or whose client writes its own ids) and that routing
or a fallback moves to an OpenAI model carries such ids on every later turn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served

from llmroute.providers.tool_ids import OPENAI_TOOL_ID_MAX, openai_tool_ids

MODEL = "up-strict?strict=1"
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  strict: {provider: fake, model: "up-strict?strict=1"}
routes:
  - {name: chitchat, examples: ["hi there!", "how are you today?"], target: strict}
default: {target: strict}
"""
LONG = [
    "toolu_vrtx_" + "a" * 60,  # 71: longer than even Anthropic's 64
    "toolu_vrtx_" + "a" * 59 + "b",  # differs from the first only past the cut
    "functions.look_up_the_weather_for_a_city:0",  # 42: Kimi's / Fireworks' shape
]
SHORT = "call_abc123"


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def _conversation() -> list[Any]:
    calls = [
        {"id": i, "type": "function", "function": {"name": "look", "arguments": "{}"}}
        for i in [*LONG, SHORT]
    ]
    return [
        {"role": "user", "content": "hi there!"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": c["id"], "content": "found"} for c in calls),
    ]


def _sent_ids(upstream: FakeUpstream) -> tuple[list[str], list[str]]:
    sent = upstream.calls_to(MODEL)[-1].body["messages"]
    calls = [c["id"] for c in sent[1]["tool_calls"]]
    results = [m["tool_call_id"] for m in sent[2:6]]
    return calls, results


@pytest.mark.parametrize("stream", [False, True])
def test_long_tool_ids_are_cut_the_same_in_the_call_and_its_result(
    client: openai.OpenAI, upstream: FakeUpstream, stream: bool
) -> None:
    """Each id over 40 is cut (its start and a hash of the whole), the same in the call
    and its result and on the next turn; two ids differing past the cut stay two; a
    short one goes as it is. They went as written, and OpenAI refused the turn."""
    messages: Any = _conversation()
    answer = client.chat.completions.create(model="auto", messages=messages, stream=stream)
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices)  # type: ignore[union-attr]
    else:
        assert answer.choices[0].message.content  # type: ignore[union-attr]
    calls, results = _sent_ids(upstream)
    assert calls == results and len(set(calls)) == 4
    assert all(len(i) <= OPENAI_TOOL_ID_MAX for i in calls)
    assert calls[0].startswith("toolu_vrtx_aaaa") and calls[3] == SHORT
    client.chat.completions.create(model="auto", messages=messages)  # the next turn
    assert _sent_ids(upstream) == (calls, results)


def test_a_responses_function_call_id_too_long_is_cut_in_call_and_output(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """The Responses front's ``function_call`` / ``function_call_output`` items, as a
    client sends back ids another model made."""
    call_id = LONG[0]
    response = client.responses.create(
        model="auto",
        input=[
            {"role": "user", "content": "hi there!"},
            {"type": "function_call", "call_id": call_id, "name": "look", "arguments": "{}"},
            {"type": "function_call_output", "call_id": call_id, "output": "found"},
        ],
    )
    assert response.output_text
    sent = upstream.calls_to(MODEL)[-1].body["messages"]
    (call,) = sent[1]["tool_calls"]
    assert len(call["id"]) <= OPENAI_TOOL_ID_MAX and sent[2]["tool_call_id"] == call["id"]


def test_a_body_without_long_ids_is_the_same_object() -> None:
    body: dict[str, Any] = {"messages": [{"role": "tool", "tool_call_id": SHORT}]}
    assert openai_tool_ids(body) is body
    long_body: dict[str, Any] = {"messages": [{"role": "tool", "tool_call_id": LONG[0]}]}
    assert openai_tool_ids(long_body)["messages"][0]["tool_call_id"] != LONG[0]
    assert long_body["messages"][0]["tool_call_id"] == LONG[0]  # never mutated
