"""Claude on Vertex AI across the gateway: `llmroute serve` as a subprocess with a
``kind: vertex`` provider, its token from a service account key whose token endpoint
is the fake's (nothing leaves 127.0.0.1), the official `openai` and `anthropic`
clients in front, the fake Vertex AI behind (which answers as Anthropic's API does)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

pytest.importorskip("google.auth")

from fake_anthropic import REDACTED, THOUGHT, sign
from fake_vertex import NO_GCE, PROJECT, REGION, FakeVertex, fake_vertex
from gateway_proc import Served, serve_text

MODEL = "claude-sonnet-4-5@20250929"
REGISTRY = """
encoder: builtin:static
providers:
  vertex: {kind: vertex, base_url: "%(base_url)s", timeout_s: 5}
models:
  sonnet: {provider: vertex, model: "%(model)s?redacted=1"}
  opus: {provider: vertex, model: claude-opus-4-1@20250805}
  denied: {provider: vertex, model: "%(model)s?gstatus=403"}
routes:
  - {name: chat, examples: [hello there], target: sonnet}
default: {target: sonnet}
aliases:
  "claude-*": sonnet
telemetry: {enabled: false}
"""
THINKING = {"type": "enabled", "budget_tokens": 2048}
SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}}
SIGNED = {"type": "thinking", "thinking": THOUGHT, "signature": sign(THOUGHT, MODEL)}
HIDDEN = {"type": "redacted_thinking", "data": REDACTED}
TOOLS: Any = [{"type": "function", "function": {"name": "read_file", "parameters": SCHEMA}}]


@pytest.fixture(scope="module")
def vertex() -> Iterator[FakeVertex]:
    with fake_vertex() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, vertex: FakeVertex) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("vertex_gateway")
    env = {
        **NO_GCE,
        "GOOGLE_APPLICATION_CREDENTIALS": str(vertex.credentials_file(tmp)),
        "CLOUDSDK_CONFIG": str(tmp / "gcloud"),
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    text = REGISTRY % {"base_url": vertex.base_url, "model": MODEL}
    with serve_text(text, tmp, env=env) as served:
        yield served


@pytest.fixture(scope="module")
def chat_client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def messages_client(gateway: Served) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as c:
        yield c


def test_a_chat_is_answered_by_claude_on_vertex(
    chat_client: openai.OpenAI, vertex: FakeVertex
) -> None:
    answer = chat_client.chat.completions.create(
        model="sonnet", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.choices[0].message.content == "echo: hello"
    assert answer.usage is not None and answer.usage.completion_tokens == 7
    sent = vertex.predicted[-1]
    assert (sent.project, sent.region, sent.method) == (PROJECT, REGION, "rawPredict")
    assert sent.model == f"{MODEL}?redacted=1"
    assert sent.token in vertex.issued and vertex.refused.count("token") == 0
    assert sent.body["anthropic_version"] == "vertex-2023-10-16" and "model" not in sent.body
    assert sent.body["max_tokens"] > 0  # Anthropic's API needs one: the default is sent


def test_a_chat_stream_arrives_in_openai_chunks(
    chat_client: openai.OpenAI, vertex: FakeVertex
) -> None:
    stream = chat_client.chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert vertex.predicted[-1].method == "streamRawPredict"


def test_a_tool_call_and_its_result_cross_both_ways(
    chat_client: openai.OpenAI, vertex: FakeVertex
) -> None:
    first = chat_client.chat.completions.create(
        model="opus", tools=TOOLS, messages=[{"role": "user", "content": "read setup.py"}]
    )
    calls = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and calls
    call = calls[0]
    assert call.type == "function"
    assert call.function.name == "read_file"
    assert json.loads(call.function.arguments) == {"query": "read setup.py"}
    assert vertex.predicted[-1].body["tools"][0]["name"] == "read_file"
    chat_client.chat.completions.create(
        model="opus",
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "read setup.py"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "setup()"},
        ],
    )
    result = vertex.predicted[-1].body["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call.id


def test_thinking_blocks_come_back_and_go_back_signed(
    chat_client: openai.OpenAI, vertex: FakeVertex
) -> None:
    first = chat_client.chat.completions.create(
        model="sonnet",
        max_tokens=8000,
        tools=TOOLS,
        messages=[{"role": "user", "content": "read setup.py"}],
        extra_body={"thinking": THINKING},
    )
    message = first.choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == THOUGHT
    assert extra["thinking_blocks"] == [SIGNED, HIDDEN]
    assert message.tool_calls
    call = message.tool_calls[0]
    chat_client.chat.completions.create(
        model="sonnet",
        max_tokens=8000,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "read setup.py"},
            {
                "role": "assistant",
                "content": message.content,
                "tool_calls": [call.model_dump()],
                "thinking_blocks": extra["thinking_blocks"],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "setup()"},
        ],
        extra_body={"thinking": THINKING},
    )
    sent = vertex.predicted[-1].body
    assert sent["thinking"] == THINKING
    assert sent["messages"][1]["content"][:2] == [SIGNED, HIDDEN]


def test_blocks_another_model_signed_are_sent_once_more_without(
    messages_client: anthropic.Anthropic, vertex: FakeVertex
) -> None:
    """The signature refusal Vertex passes on in Anthropic's words: the turn is sent
    again without the blocks, as for kind anthropic."""
    history: Any = [
        {"role": "user", "content": "read setup.py"},
        {
            "role": "assistant",
            "content": [SIGNED, {"type": "tool_use", "id": "t1", "name": "read_file", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]},
    ]
    before = len(vertex.predicted)
    answer = messages_client.messages.create(
        model="opus",
        max_tokens=8000,
        thinking=THINKING,  # type: ignore[arg-type]
        tools=[{"name": "read_file", "input_schema": SCHEMA}],
        messages=history,
    )
    refused, retried = (p.body for p in vertex.predicted[before:])
    assert refused["messages"][1]["content"][0] == SIGNED
    assert [b["type"] for b in retried["messages"][1]["content"]] == ["tool_use"]
    assert answer.stop_reason


def test_the_messages_front_serves_a_vertex_model(
    messages_client: anthropic.Anthropic, vertex: FakeVertex
) -> None:
    message = messages_client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hello"}],
    )
    assert [b.type for b in message.content] == ["redacted_thinking", "text"]
    assert message.usage.output_tokens == 7
    sent = vertex.predicted[-1].body
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    with messages_client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "echo: hi"
    assert vertex.predicted[-1].method == "streamRawPredict"


def test_a_refused_permission_is_a_502_sent_once(
    chat_client: openai.OpenAI, vertex: FakeVertex, gateway: Served
) -> None:
    before = len(vertex.predicted)
    with pytest.raises(openai.APIStatusError) as caught:
        chat_client.chat.completions.create(
            model="denied", messages=[{"role": "user", "content": "hello"}]
        )
    assert caught.value.status_code == 502
    assert len(vertex.predicted) == before + 1
    log = gateway.log_text()
    assert "Traceback" not in log
    assert not any(token in log for token in vertex.issued)
    assert "PRIVATE KEY" not in log


def test_one_token_serves_every_request(chat_client: openai.OpenAI, vertex: FakeVertex) -> None:
    for _ in range(3):
        chat_client.chat.completions.create(
            model="opus", messages=[{"role": "user", "content": "hello"}]
        )
    assert vertex.issued == ["ya29.fake-1"]
