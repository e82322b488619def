"""``POST /v1/messages`` end to end: `llmroute serve` as a subprocess, the official
`anthropic` client in front of it, the fake OpenAI-protocol upstream behind it: the same
routing, the Messages shapes back (one message or its event stream), Anthropic's error
format, and a tool call's round trip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
from fake_anthropic import USAGE, FakeAnthropic
from fake_upstream import FakeUpstream
from gateway_proc import Served

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  relay: {kind: openai, base_url: "%(url)s", timeout_s: 5, cache_control: send}
  claude: {kind: anthropic, base_url: "%(anthropic)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, price: {input: 1, output: 2}}
  large: {provider: fake, model: up-large, price: {input: 10, output: 30}}
  thinker: {provider: fake, model: up-thinker, reasoning: {effort: medium}}
  sonnet: {provider: claude, model: claude-x}
  routed: {provider: relay, model: up-routed}
  broken: {provider: fake, model: "up-broken?mid=1"}
  several: {provider: fake, model: "up-several?multi=1&vary=1", params: {n: 2}}
  parallel: {provider: fake, model: "up-parallel?choices=1&tools=1&calls=2"}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
aliases:
  "claude-*": sonnet
"""


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as c:
        yield c


def test_a_message_is_routed_and_answered_in_messages_shape(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    raw = client.messages.with_raw_response.create(
        model="auto",
        max_tokens=64,
        system="You are terse.",
        messages=[{"role": "user", "content": "write a Python function to parse YAML"}],
    )
    assert raw.headers["x-llmroute-route"] == "code"
    assert raw.headers["x-llmroute-model"] == "large"
    message = raw.parse()
    assert message._request_id == raw.headers["x-llmroute-decision-id"]  # `request-id`
    assert raw.headers["x-request-id"] == message._request_id
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "large" and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    sent = upstream.requests[-1].body
    assert sent["model"] == "up-large" and sent["max_tokens"] == 64
    assert sent["messages"][0] == {"role": "system", "content": "You are terse."}


def test_a_stream_arrives_as_messages_events(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="chitchat", max_tokens=32, messages=[{"role": "user", "content": "hi there!"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.model == "small" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_a_stream_that_breaks_ends_with_an_error_event(client: anthropic.Anthropic) -> None:
    """The upstream stream breaks after its first words: Anthropic's client hears an
    ``error`` event (and raises), not a ``message_stop`` after half an answer."""
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model="broken", max_tokens=32, messages=[{"role": "user", "content": "hello"}]
        ) as stream,
    ):
        list(stream)
    assert "the upstream stream broke off" in str(caught.value)


def test_a_model_asked_for_several_choices_answers_choice_0(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    """Messages has no ``n``: a client's is not sent, but a registry's ``params: {n: 2}``
    asks the upstream for two choices all the same. The message is choice 0's, whole
    or streamed: a stream read every choice's deltas into one message, the words of
    both interleaved ("echo: echo: hello hello")."""
    ask = [{"role": "user", "content": "hello"}]
    client.messages.create(model="small", max_tokens=32, messages=ask, extra_body={"n": 3})
    assert "n" not in upstream.requests[-1].body
    message = client.messages.create(model="several", max_tokens=32, messages=ask)
    assert upstream.requests[-1].body["n"] == 2
    assert len(message.content) == 1 and message.content[0].type == "text"
    assert message.content[0].text.startswith("echo: hello #")
    with client.messages.stream(model="several", max_tokens=32, messages=ask) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert upstream.requests[-1].body["n"] == 2
    assert text.startswith("echo: hello #") and text.count("echo") == 1
    assert len(final.content) == 1 and final.stop_reason == "end_turn"


def test_tool_use_and_results_cross_both_ways(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    tools = [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    history = [
        {"role": "user", "content": "what is the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny, 21 C"},
                {"type": "text", "text": "and tomorrow?"},
            ],
        },
    ]
    message = client.messages.create(
        model="small",
        max_tokens=32,
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "auto"},
        messages=history,  # type: ignore[arg-type]
    )
    assert message.content and message.stop_reason == "end_turn"
    sent = upstream.requests[-1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tools"][0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
    assert sent["tool_choice"] == "auto"
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["user", "assistant", "tool", "user"]
    call = sent["messages"][1]["tool_calls"][0]
    assert call["id"] == "call_1" and call["function"]["name"] == "get_weather"
    assert sent["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "sunny, 21 C",
    }


def test_parallel_calls_streamed_interleaved_arrive_whole(client: anthropic.Anthropic) -> None:
    """An upstream streams two tool calls at once, their argument pieces interleaved in
    choice 0: the client's stream has one block open at a time, each call's input whole
    in the block its stop event closes, in the calls' order."""
    ask = [{"role": "user", "content": "look it up"}]
    with client.messages.stream(model="parallel", max_tokens=32, messages=ask) as stream:
        events = list(stream)
        final = stream.get_final_message()
    stopped = [e.content_block for e in events if e.type == "content_block_stop"]
    calls = [b for b in final.content if b.type == "tool_use"]
    assert [c.id for c in calls] == ["call_0_0", "call_0_1"]
    assert [c.input for c in calls] == [b.input for b in stopped if b.type == "tool_use"]
    q = calls[0].input["q"]  # type: ignore[index]
    assert isinstance(q, str) and q
    assert [c.input for c in calls] == [{"q": q, "n": 0}, {"q": q, "n": 1}]
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens > 0
    opened: set[int] = set()
    for event in events:  # one block open at a time, no piece after its block's stop
        if event.type == "content_block_start":
            assert not opened
            opened.add(event.index)
        elif event.type == "content_block_delta":
            assert opened == {event.index}
        elif event.type == "content_block_stop":
            opened.discard(event.index)


def test_thinking_is_said_in_the_serving_models_dialect(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    ask = [{"role": "user", "content": "prove that the square root of 2 is irrational"}]
    client.messages.create(
        model="thinker",
        max_tokens=16000,
        thinking={"type": "enabled", "budget_tokens": 10000},
        messages=ask,  # type: ignore[arg-type]
    )
    sent = upstream.requests[-1].body
    assert sent["model"] == "up-thinker" and sent["reasoning_effort"] == "high"
    assert "thinking" not in sent and sent["max_tokens"] == 16000
    client.messages.create(
        model="small",  # not known to think: OpenAI servers refuse Anthropic's parameter
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=ask,  # type: ignore[arg-type]
    )
    sent = upstream.requests[-1].body
    assert sent["model"] == "up-small"
    assert "thinking" not in sent and "reasoning_effort" not in sent
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            model="auto",
            max_tokens=1024,
            thinking={"type": "enabled", "budget_tokens": 2048},
            messages=ask,  # type: ignore[arg-type]
        )
    assert "budget_tokens" in bad.value.message


MARK = {"type": "ephemeral"}
CACHED_ASK: list[dict[str, object]] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "summarise the shared context", "cache_control": MARK}
        ],
    }
]
CACHED_SYSTEM: list[dict[str, object]] = [
    {"type": "text", "text": "You are terse."},
    {"type": "text", "text": "A long shared context.", "cache_control": MARK},
]


def test_prompt_cache_markers_reach_a_claude_model_as_breakpoints(
    client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    message = client.messages.create(
        model="sonnet",
        max_tokens=64,
        system=CACHED_SYSTEM,  # type: ignore[arg-type]
        messages=CACHED_ASK,  # type: ignore[arg-type]
    )
    sent = claude.requests[-1].body
    assert sent["system"] == CACHED_SYSTEM
    assert sent["messages"][0]["content"][0]["cache_control"] == MARK
    read = USAGE["cache_read_input_tokens"]
    assert message.usage.cache_read_input_tokens == read
    # as Anthropic counts them: the tokens written to the cache apart from the input
    assert message.usage.cache_creation_input_tokens == USAGE["cache_creation_input_tokens"]
    assert message.usage.input_tokens == USAGE["input_tokens"]


def test_prompt_cache_markers_are_dropped_for_openai_unless_the_provider_sends_them(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    for model, kept in (("small", False), ("routed", True)):
        client.messages.create(
            model=model,
            max_tokens=64,
            system=CACHED_SYSTEM,  # type: ignore[arg-type]
            messages=CACHED_ASK,  # type: ignore[arg-type]
        )
        sent = upstream.requests[-1].body
        assert ("cache_control" in str(sent)) is kept, model
        texts = [p["text"] for p in sent["messages"][0]["content"]]
        assert texts == ["You are terse.", "A long shared context."]


def test_errors_come_in_anthropic_format(gateway: Served, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(
            model="mistral-nonexistent", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            model="auto",
            max_tokens=8,
            messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}],  # type: ignore[list-item]
        )
    assert "document" in bad.value.message
    for body, param in (
        ({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"model": "auto", "max_tokens": 8, "messages": []}, "messages"),
        ({"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ):
        response = httpx.post(f"{gateway.url}/v1/messages", json=body, timeout=10)
        assert response.status_code == 400
        payload = response.json()
        assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
        assert param in payload["error"]["message"]
    broken = httpx.post(f"{gateway.url}/v1/messages", content=b"{", timeout=10)
    assert broken.status_code == 400 and broken.json()["type"] == "error"


def test_the_serve_log_holds_no_traceback(gateway: Served, tmp_path: Path) -> None:
    assert "Traceback" not in gateway.log.read_text()


def test_count_tokens_estimates_without_calling_upstream(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    ask = [{"role": "user", "content": "write a Python function to parse YAML"}]
    plain = client.messages.count_tokens(model="auto", messages=ask)  # type: ignore[arg-type]
    longer = client.messages.count_tokens(
        model="auto",
        system="You are a careful senior engineer who explains every step.",
        messages=ask,  # type: ignore[arg-type]
    )
    assert 0 < plain.input_tokens < longer.input_tokens
    assert len(upstream.requests) == before
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(model="auto", messages=[])


def test_a_coding_agents_turn_composes_alias_thinking_cache_and_tools(
    client: anthropic.Anthropic, claude: FakeAnthropic
) -> None:
    """What a coding agent sends on one turn: its own model name, thinking, cache
    markers on the system prompt and tools, a tool loop, a stream."""
    tools = [
        {
            "name": "read_file",
            "description": "Read a file",
            "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
            "cache_control": MARK,
        }
    ]
    ask = "read the file setup.py"
    with client.messages.stream(
        model="claude-sonnet-4-5-20250929",
        max_tokens=16000,
        thinking={"type": "enabled", "budget_tokens": 4096},
        system=CACHED_SYSTEM,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": ask}],
    ) as stream:
        final = stream.get_final_message()
    sent = claude.requests[-1].body
    assert sent["model"] == "claude-x" and sent["stream"] is True
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["system"] == CACHED_SYSTEM and sent["tools"][0]["cache_control"] == MARK
    call = next(block for block in final.content if block.type == "tool_use")
    assert call.name == "read_file" and call.input == {"query": ask}

    # the next turn answers the call: Anthropic would refuse thinking without the
    # earlier thinking blocks the chat format cannot carry, so it goes without
    client.messages.create(
        model="claude-sonnet-4-5-20250929",
        max_tokens=16000,
        thinking={"type": "enabled", "budget_tokens": 4096},
        tools=tools,  # type: ignore[arg-type]
        messages=[
            {"role": "user", "content": ask},
            {"role": "assistant", "content": [call.model_dump()]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call.id,
                        "content": "from setuptools import setup",
                        "cache_control": MARK,
                    }
                ],
            },
        ],
    )
    sent = claude.requests[-1].body
    assert "thinking" not in sent
    result = sent["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["cache_control"] == MARK
