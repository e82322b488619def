"""`AnthropicProvider` against a fake Messages API on 127.0.0.1 (a real HTTP server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fake_anthropic import (
    MESSAGE_ID,
    REDACTED,
    THOUGHT,
    TOOL_ID,
    USAGE,
    FakeAnthropic,
    event_error,
    fake_anthropic,
    sign,
)

from llmroute import sse
from llmroute.errors import (
    ContextWindowExceeded,
    ProviderError,
    ProviderMisconfigured,
    RateLimited,
    UpstreamRejected,
)
from llmroute.providers import AnthropicProvider, build_providers
from llmroute.providers.anthropic import StreamTranslator, _unthought
from llmroute.providers.base import Timeouts
from llmroute.registry.schema import Provider, Registry
from llmroute.sse import chunk_of
from llmroute.untrusted_json import loads

KEY_ENV = "FAKE_ANTHROPIC_KEY"
SECRET = "sk-ant-api03-Zq9TOPSECRETtopsecret0000"
TIMEOUTS = Timeouts(connect_s=2.0, total_s=5.0)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]
PROMPT_TOKENS = (
    USAGE["input_tokens"] + USAGE["cache_creation_input_tokens"] + USAGE["cache_read_input_tokens"]
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with fake_anthropic() as upstream:
        yield upstream


def make(server: FakeAnthropic, base_url: str | None = None) -> AnthropicProvider:
    spec = Provider(
        kind="anthropic",
        base_url=base_url or server.url,
        api_key_env=KEY_ENV,
        headers={"anthropic-beta": "tools-2024"},
        timeout_s=5,
    )
    return AnthropicProvider("anth", spec, environ={KEY_ENV: SECRET})


def complete(server: FakeAnthropic, model: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        provider = make(server, **kw)
        try:
            return await provider.complete(model, body, timeouts=TIMEOUTS)
        finally:
            await provider.aclose()

    return asyncio.run(run())


def stream(server: FakeAnthropic, model: str, body: dict[str, Any]) -> list[bytes]:
    async def run() -> list[bytes]:
        provider = make(server)
        try:
            return [item async for item in provider.stream(model, body, timeouts=TIMEOUTS)]
        finally:
            await provider.aclose()

    return asyncio.run(run())


def complete_error(server: FakeAnthropic, model: str, body: dict[str, Any]) -> ProviderError:
    """The error `complete` raised."""
    with pytest.raises(ProviderError) as caught:
        complete(server, model, body)
    return caught.value


def stream_until_error(
    server: FakeAnthropic, model: str, body: dict[str, Any]
) -> tuple[list[bytes], ProviderError]:
    """The events yielded before the stream raised, and the error."""
    items: list[bytes] = []

    async def run() -> ProviderError:
        provider = make(server)
        try:
            async for item in provider.stream(model, body, timeouts=TIMEOUTS):
                items.append(item)
        except ProviderError as exc:
            return exc
        finally:
            await provider.aclose()
        raise AssertionError("the stream did not fail")

    return items, asyncio.run(run())


def chunks(items: list[bytes]) -> list[dict[str, Any]]:
    """The JSON of every chunk; each item must be one complete event."""
    assert items[-1] == b"data: [DONE]\n\n"
    parsed = []
    for item in items[:-1]:
        assert item.startswith(b"data: ") and item.endswith(b"\n\n")
        assert item.count(b"\n\n") == 1
        parsed.append(json.loads(item[len(b"data: ") :]))
    return parsed


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# -- requests ----------------------------------------------------------------------------


def test_complete_sends_a_messages_request(server: FakeAnthropic) -> None:
    body = {
        "model": "auto",
        "messages": [{"role": "system", "content": "Be brief."}, *user("hello there")],
        "stream_options": {"include_usage": True},
        "seed": 3,
    }
    completion = complete(server, "claude-x", body)
    sent = server.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == SECRET
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "tools-2024"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
        "system": "Be brief.",
    }
    assert completion["id"] == f"chatcmpl-{MESSAGE_ID}"
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "claude-x"
    assert completion["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello there"},
            "finish_reason": "stop",
        }
    ]
    assert completion["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": USAGE["output_tokens"],
        "total_tokens": PROMPT_TOKENS + USAGE["output_tokens"],
        "prompt_tokens_details": {
            "cached_tokens": USAGE["cache_read_input_tokens"],
            "cache_write_tokens": USAGE["cache_creation_input_tokens"],
        },
    }


def test_a_base_url_ending_in_v1_is_accepted(server: FakeAnthropic) -> None:
    completion = complete(
        server, "claude-x", {"messages": user("hi")}, base_url=server.url + "/v1/"
    )
    assert server.last.path == "/v1/messages"
    assert completion["choices"][0]["message"]["content"] == "echo: hi"


def test_complete_with_tools_returns_tool_calls(server: FakeAnthropic) -> None:
    body = {"messages": user("llmroute"), "tools": TOOLS, "tool_choice": "auto"}
    completion = complete(server, "claude-x", body)
    assert server.last.body["tools"][0]["input_schema"] == TOOLS[0]["function"]["parameters"]  # type: ignore[index]
    assert server.last.body["tool_choice"] == {"type": "auto"}
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "echo: llmroute"
    assert choice["message"]["tool_calls"] == [
        {
            "id": TOOL_ID,
            "type": "function",
            "function": {"name": "search", "arguments": '{"query": "llmroute"}'},
        }
    ]


def test_a_tool_round_trip_sends_tool_use_and_tool_result(server: FakeAnthropic) -> None:
    call = {
        "id": TOOL_ID,
        "type": "function",
        "function": {"name": "search", "arguments": '{"query": "x"}'},
    }
    messages = [
        *user("find x"),
        {"role": "assistant", "content": "Searching.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": TOOL_ID, "content": "x is a letter"},
    ]
    complete(server, "claude-x", {"messages": messages, "tools": TOOLS, "tool_choice": "none"})
    sent = server.last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][1] == {
        "type": "tool_use",
        "id": TOOL_ID,
        "name": "search",
        "input": {"query": "x"},
    }
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": TOOL_ID, "content": "x is a letter"}
    ]


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")],
)
def test_stop_reasons(server: FakeAnthropic, stop: str, finish: str) -> None:
    completion = complete(server, f"claude-x?stop={stop}", {"messages": user("hi")})
    assert completion["choices"][0]["finish_reason"] == finish


def test_thinking_comes_beside_the_content_as_litellm_says_it(server: FakeAnthropic) -> None:
    """Whole: ``reasoning_content`` and ``thinking_blocks``. Streamed: each thinking
    delta as ``reasoning_content`` and a ``thinking_blocks`` piece, the signature as a
    piece of its own, a redacted block whole, each piece with its block's index; never
    as content."""
    signed = {"type": "thinking", "thinking": THOUGHT, "signature": sign(THOUGHT)}
    hidden = {"type": "redacted_thinking", "data": REDACTED}
    model = "claude-x?thinking=1&redacted=1"
    completion = complete(server, model, {"messages": user("hi")})
    message = completion["choices"][0]["message"]
    assert message["content"] == "echo: hi" and message["reasoning_content"] == THOUGHT
    assert message["thinking_blocks"] == [signed, hidden]
    items = stream(server, model, {"messages": user("hi"), "stream": True})
    deltas = [c["choices"][0]["delta"] for c in chunks(items) if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "echo: hi"
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == THOUGHT
    pieces = [piece for d in deltas for piece in d.get("thinking_blocks") or ()]
    assert "".join(p.get("thinking", "") for p in pieces) == THOUGHT
    signature = {"index": 0, "type": "thinking", "thinking": "", "signature": sign(THOUGHT)}
    assert pieces[-2:] == [signature, {"index": 1, **hidden}]
    assert {p["index"] for p in pieces[:-1]} == {0}


def test_thinking_blocks_go_back_first_and_unchanged(server: FakeAnthropic) -> None:
    """The blocks go back first, unchanged. The fake refuses a tool loop's turn without
    its signed thinking block first, as Anthropic does: sent once more without thinking,
    the turn answers without it rather than failing."""
    call = {"id": TOOL_ID, "type": "function", "function": {"name": "search", "arguments": "{}"}}
    signed = {"type": "thinking", "thinking": THOUGHT, "signature": sign(THOUGHT)}
    messages = [
        *user("find x"),
        {"role": "assistant", "content": None, "tool_calls": [call], "thinking_blocks": [signed]},
        {"role": "tool", "tool_call_id": TOOL_ID, "content": "x is a letter"},
    ]
    body = {"messages": messages, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    complete(server, "claude-x", body)
    assert server.last.body["messages"][1]["content"][0] == signed
    del messages[1]["thinking_blocks"]
    before = len(server.requests)
    complete(server, "claude-x", body)
    refused, retried = (r.body for r in server.requests[before:])
    assert refused["thinking"] == body["thinking"] and "thinking" not in retried


@pytest.mark.parametrize(
    ("refusal", "again"),
    [
        (
            "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
            "`tool_use`. When `thinking` is enabled, a final `assistant` message must start "
            "with a thinking block",
            True,
        ),
        ("Thinking may not be enabled when tool_choice forces tool use.", True),
        (
            "messages.1.content.0: When thinking is disabled, an `assistant` message in the "
            "final position cannot contain `thinking`.",
            True,
        ),
        ("messages.1.content.0: Invalid `signature` in `thinking` block", True),
        ("max_tokens: Field required", False),
    ],
)
def test_a_refusal_of_thinking_is_sent_once_more_without_it(refusal: str, again: bool) -> None:
    """Should Anthropic's rules on thinking differ from what the gateway knows of them,
    its refusal is answered by sending the turn once more without what it refused:
    thinking the request cannot carry, or the thinking blocks; any other 400 is the
    client's."""
    signed = {"type": "thinking", "thinking": "hmm", "signature": "c2ln"}
    call = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    payload: dict[str, Any] = {
        "model": "claude-x",
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [signed, call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        ],
    }
    sent = _unthought(payload, UpstreamRejected("claude", refusal, status=400))
    if not again:
        assert sent is None
        return
    # without thinking, and so without the loop's blocks, which Anthropic then refuses
    assert sent is not None and "thinking" not in sent
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"]
    assert payload["messages"][1]["content"][0] == signed  # the request itself unchanged


def test_a_rejected_parameter_sends_nothing(server: FakeAnthropic) -> None:
    before = len(server.requests)
    with pytest.raises(UpstreamRejected, match="'n'") as caught:
        complete(server, "claude-x", {"messages": user("hi"), "n": 3})
    assert caught.value.status == 400
    with pytest.raises(UpstreamRejected, match="'logprobs'"):
        stream(server, "claude-x", {"messages": user("hi"), "logprobs": True, "stream": True})
    assert len(server.requests) == before


# -- streams -----------------------------------------------------------------------------


def test_stream_of_text_with_usage(server: FakeAnthropic) -> None:
    body = {
        "messages": user("one two three"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    parsed = chunks(stream(server, "claude-x", body))
    assert server.last.body["stream"] is True
    assert "stream_options" not in server.last.body
    assert {c["object"] for c in parsed} == {"chat.completion.chunk"}
    assert {c["id"] for c in parsed} == {f"chatcmpl-{MESSAGE_ID}"}
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in parsed if c["choices"])
    assert text == "echo: one two three"
    finishes = [c["choices"][0]["finish_reason"] for c in parsed if c["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": USAGE["output_tokens"],
        "total_tokens": PROMPT_TOKENS + USAGE["output_tokens"],
        "prompt_tokens_details": {
            "cached_tokens": USAGE["cache_read_input_tokens"],
            "cache_write_tokens": USAGE["cache_creation_input_tokens"],
        },
    }


def test_stream_without_include_usage_has_no_usage_chunk(server: FakeAnthropic) -> None:
    parsed = chunks(stream(server, "claude-x", {"messages": user("hi"), "stream": True}))
    assert all(c["choices"] for c in parsed)
    assert all("usage" not in c for c in parsed)


def test_stream_of_tool_calls(server: FakeAnthropic) -> None:
    body = {"messages": user("weather in Paris"), "tools": TOOLS, "stream": True}
    parsed = chunks(stream(server, "claude-x", body))
    calls = [
        call
        for c in parsed
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert calls[0] == {
        "index": 0,
        "id": TOOL_ID,
        "type": "function",
        "function": {"name": "search", "arguments": ""},
    }
    assert all(set(call) == {"index", "function"} and call["index"] == 0 for call in calls[1:])
    assert len(calls) > 2  # the JSON arrived in pieces
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments) == {"query": "weather in Paris"}
    assert parsed[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_streamed_tool_call_without_input_has_empty_object_arguments() -> None:
    """Anthropic streams a call that takes no input as a block with no JSON text: its
    arguments are ``{}`` as in the whole answer, not ``""``, which no client parses."""
    translator = StreamTranslator("claude")
    events = [
        {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t0", "name": "now", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t1", "name": "get", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'},
        },
        {"type": "content_block_stop", "index": 1},
    ]
    out = [
        json.loads(e[6:])
        for event in events
        for e in translator.feed(f"data: {json.dumps(event)}\n\n".encode())
    ]
    arguments: dict[int, str] = {}
    for chunk in out:
        for call in chunk["choices"][0]["delta"].get("tool_calls", []):
            arguments[call["index"]] = (
                arguments.get(call["index"], "") + call["function"]["arguments"]
            )
    assert arguments == {0: "{}", 1: '{"a": 1}'}


def test_a_text_delta_holding_half_an_emoji_is_text_not_a_lost_event() -> None:
    """An emoji cut in two by a proxy in front of Anthropic (its halves in two deltas, a
    lone ``\\ud83d`` each) made each event unreadable, and the translator dropped them:
    the text went missing without a word. They are U+FFFD now, the rest of each delta
    kept."""
    translator = StreamTranslator("claude")
    events = [
        b'data: {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3}}}',
        b'data: {"type": "content_block_start", "index": 0, '
        b'"content_block": {"type": "text", "text": ""}}',
        b'data: {"type": "content_block_delta", "index": 0, '
        b'"delta": {"type": "text_delta", "text": "party \\ud83c"}}',
        b'data: {"type": "content_block_delta", "index": 0, '
        b'"delta": {"type": "text_delta", "text": "\\udf89 now"}}',
    ]
    out = [json.loads(e[6:]) for event in events for e in translator.feed(event + b"\n\n")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in out if c["choices"])
    assert text == "party \ufffd\ufffd now"


def test_each_translated_chunk_is_handed_to_the_meter_not_parsed_again(
    server: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The translator writes each chunk from an object; the stream's meter, reading the
    chunk right after (`chunk_of`), takes that object instead of parsing it back (every
    chunk was parsed again), and it is what the chunk says."""
    parses: list[bytes] = []

    def counted(text: Any, **kw: Any) -> Any:
        parses.append(text)
        return loads(text, **kw)

    monkeypatch.setattr(sse, "loads", counted)
    body = {
        "messages": user("weather in Paris"),
        "tools": TOOLS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    read: list[dict[str, Any] | None] = []

    async def run() -> list[bytes]:
        provider = make(server)
        items = []
        try:
            async for item in provider.stream("claude-x", body, timeouts=TIMEOUTS):
                items.append(item)
                read.append(chunk_of(item))
        finally:
            await provider.aclose()
        return items

    items = asyncio.run(run())
    assert parses == []
    assert read == [*chunks(items), None]  # [DONE] carries none
    assert len(read) > 5 and read[-2] is not None and "usage" in read[-2]


# -- errors ------------------------------------------------------------------------------


def test_429_is_rate_limited_with_retry_after(server: FakeAnthropic) -> None:
    with pytest.raises(RateLimited) as caught:
        complete(server, "claude-x?status=429&retry_after=7", {"messages": user("hi")})
    assert caught.value.status == 429
    assert caught.value.retry_after_s == 7.0
    assert caught.value.retryable


def test_prompt_too_long_is_context_window_exceeded(server: FakeAnthropic) -> None:
    with pytest.raises(ContextWindowExceeded) as caught:
        complete(server, "claude-x?context=1", {"messages": user("hi")})
    assert caught.value.code == "context_length_exceeded"
    assert "prompt is too long" in str(caught.value)


def test_529_overloaded_is_retryable(server: FakeAnthropic) -> None:
    with pytest.raises(ProviderError) as caught:
        complete(server, "claude-x?status=529", {"messages": user("hi")})
    assert type(caught.value) is ProviderError
    assert caught.value.status == 529
    assert caught.value.code == "overloaded_error"
    assert caught.value.retryable
    assert "overloaded" in str(caught.value)


def test_other_4xx_is_upstream_rejected(server: FakeAnthropic) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        complete(server, "claude-x?status=400", {"messages": user("hi")})
    assert caught.value.status == 400
    assert caught.value.code == "invalid_request_error"
    assert not caught.value.retryable


def test_an_error_status_raises_before_the_first_event(server: FakeAnthropic) -> None:
    items, error = stream_until_error(
        server, "claude-x?status=529", {"messages": user("hi"), "stream": True}
    )
    assert items == []
    assert error.status == 529


def test_an_error_event_mid_stream_raises_overloaded(server: FakeAnthropic) -> None:
    items, error = stream_until_error(
        server, "claude-x?error_event=1", {"messages": user("hi there"), "stream": True}
    )
    assert len(items) >= 1
    assert type(error) is ProviderError
    assert error.status == 529 and error.retryable
    assert error.code == "overloaded_error"


def test_an_account_out_of_credit_refuses_the_gateway_streamed_or_not(
    server: FakeAnthropic,
) -> None:
    """Anthropic says a spent credit balance with a 400 ``invalid_request_error``, before
    a stream or as its ``error`` event: the gateway's account, to the next deployment or
    model at once (`ProviderMisconfigured`), not the request's fault sent back to the
    client; its attempt says so. The event was a plain ProviderError(400)."""
    ask = {"messages": user("hi")}
    said = complete_error(server, "claude-x?credit=1", ask)
    items, streamed = stream_until_error(
        server, "claude-x?early_error=credit", {**ask, "stream": True}
    )
    for error in (said, streamed):
        assert type(error) is ProviderMisconfigured and error.retryable
        assert error.status == 400 and error.code == "invalid_request_error"
        assert "account with the provider is out of credits" in error.message
        assert "credit balance is too low" in error.message
    assert b'"content": "echo' not in b"".join(items)  # it failed before its words


@pytest.mark.parametrize(
    ("kind", "error_class", "status", "retryable"),
    [
        ("overloaded_error", ProviderError, 529, True),  # as the 529: retried, next deployment
        ("rate_limit_error", RateLimited, 429, True),
        ("api_error", ProviderError, 500, True),
        ("request_too_large", UpstreamRejected, 413, False),  # the request's size
        ("authentication_error", ProviderMisconfigured, 401, True),
        ("billing_error", ProviderMisconfigured, 402, True),
    ],
)
def test_an_error_event_before_the_words_is_read_as_its_status(
    server: FakeAnthropic,
    kind: str,
    error_class: type[ProviderError],
    status: int,
    retryable: bool,
) -> None:
    """Each of Anthropic's error types, sent as a stream's event after its 200, is the
    error its status would be, with its message (it said only the type)."""
    body = {"messages": user("hi"), "stream": True}
    _, error = stream_until_error(server, f"claude-x?early_error={kind}", body)
    assert type(error) is error_class
    assert (error.status, error.code, error.retryable) == (status, kind, retryable)
    assert f"answered with error {status}" in error.message or "429 in its answer" in error.message
    if status not in (401, 403):  # auth messages are not repeated
        assert error.message.endswith(event_error(kind)["message"])


def test_a_413_is_the_requests_size(server: FakeAnthropic) -> None:
    error = complete_error(server, "claude-x?status=413", {"messages": user("hi")})
    assert type(error) is UpstreamRejected and error.status == 413
    assert error.code == "request_too_large" and "maximum allowed number of bytes" in error.message


def test_a_broken_stream_raises(server: FakeAnthropic) -> None:
    items, error = stream_until_error(
        server, "claude-x?mid=1", {"messages": user("hi there"), "stream": True}
    )
    assert len(items) >= 1
    assert error.status is None and error.retryable


def test_a_stream_that_ends_before_message_stop_raises(server: FakeAnthropic) -> None:
    items, error = stream_until_error(
        server, "claude-x?truncate=1", {"messages": user("hi there"), "stream": True}
    )
    assert b"data: [DONE]\n\n" not in items
    assert "message_stop" in str(error)
    assert error.retryable


def _error_echoing_key(server: FakeAnthropic, key: str) -> ProviderError:
    """The error of a call with `key` to an upstream that echoes it in its message."""
    spec = Provider(kind="anthropic", base_url=server.url, api_key_env=KEY_ENV, timeout_s=5)

    async def run() -> ProviderError:
        provider = AnthropicProvider("anth", spec, environ={KEY_ENV: key})
        try:
            body = {"messages": user("hi")}
            await provider.complete("claude-x?echo_key=1", body, timeouts=TIMEOUTS)
        except ProviderError as exc:
            return exc
        finally:
            await provider.aclose()
        raise AssertionError("no ProviderError")

    return asyncio.run(run())


@pytest.mark.parametrize("key", ["my-vllm-secret", "fw_3ZgLrQk9xWb2Tn7Yp4Hs1Dv"])
def test_a_key_of_no_known_shape_is_cut_from_what_the_upstream_echoes(
    server: FakeAnthropic, key: str
) -> None:
    """The key-shaped pattern cannot know a proxy's or a self-hosted server's key (a
    vLLM ``--api-key``, a 27-character token): the key the provider sends is cut from
    the upstream's messages as it is (it reached the client's error body, and the log)."""
    error = _error_echoing_key(server, key)
    assert server.last.headers["x-api-key"] == key  # it was sent, and echoed back
    assert key not in str(error) and "made with key [redacted]" in str(error)


@pytest.mark.parametrize("stop", ["\n", ["\n\n", "END"], ["", " "]])
def test_whitespace_stop_sequences_are_left_out(server: FakeAnthropic, stop: Any) -> None:
    """Anthropic refuses a stop sequence that is only whitespace ("each stop sequence must
    contain non-whitespace"), which OpenAI takes (``stop: ["\\n"]`` for one line): it
    is left out, and the request answered (it was the client's 400)."""
    answer = complete(server, "claude-x", {"messages": user("hi"), "stop": stop})
    assert answer["choices"][0]["message"]["content"] == "echo: hi"
    sent = server.last.body.get("stop_sequences")
    assert sent == (["END"] if isinstance(stop, list) and "END" in stop else None)


def test_an_assistants_whitespace_texts_are_left_out(server: FakeAnthropic) -> None:
    """Anthropic refuses a message whose text is only whitespace ("text content blocks
    must contain non-whitespace text"), which OpenAI takes and models write: an
    assistant's "\\n\\n" beside its tool call, a " " answer. An assistant's are left
    out, as empty texts are (the client got that 400 on every later turn of the
    conversation); a user's are the client's own words, sent as they are."""
    call = {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "\n\n", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "found"},
        {"role": "assistant", "content": [{"type": "text", "text": " "}]},
        {"role": "user", "content": "more"},
    ]
    answer = complete(server, "claude-x", {"messages": messages})
    assert answer["choices"][0]["message"]["content"] == "echo: more"
    sent = server.last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent[1]["content"]] == ["tool_use"]
    assert sent[2]["content"][-1] == {"type": "text", "text": "more"}


def test_another_providers_tool_call_ids_are_made_anthropics(server: FakeAnthropic) -> None:
    """Anthropic takes tool ids of letters, digits, _ and - alone; a conversation the
    router moved from another model carries that model's ("functions.search:0" from
    Kimi or Fireworks), which was the client's 400 on every later turn. Each is written
    in Anthropic's alphabet, the same in the call and in its result, two ids still two."""
    calls = [
        {"id": i, "type": "function", "function": {"name": "look", "arguments": "{}"}}
        for i in ("functions.look:0", "functions.look:1", "toolu_01Ok")
    ]
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": c["id"], "content": "found"} for c in calls),
    ]
    answer = complete(server, "claude-x", {"messages": messages})
    assert answer["choices"][0]["message"]["content"]
    sent = server.last.body["messages"]
    uses = [b["id"] for b in sent[1]["content"]]
    results = [b["tool_use_id"] for b in sent[2]["content"]]
    assert uses == results and len(set(uses)) == 3 and uses[2] == "toolu_01Ok"


def test_a_tool_id_too_long_for_anthropic_is_cut_the_same_in_call_and_result(
    server: FakeAnthropic,
) -> None:
    """An id of Anthropic's alphabet but longer than it takes (another provider's or a
    client's, 100 characters) went on as written, and the turn was refused; it is cut
    to 64 with a hash of the whole, the same in the call and its result on every turn,
    and two ids differing only past the cut stay two."""
    long_ids = ["call_" + "a" * 95, "call_" + "a" * 94 + "b", "functions.look:" + "x" * 90]
    calls = [
        {"id": i, "type": "function", "function": {"name": "look", "arguments": "{}"}}
        for i in [*long_ids, "toolu_01A09q90qw90lq917835lq9"]
    ]
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": c["id"], "content": "found"} for c in calls),
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "again"},
    ]
    answer = complete(server, "claude-x", {"messages": messages})
    assert answer["choices"][0]["message"]["content"] == "echo: again"
    sent = server.last.body["messages"]
    uses = [b["id"] for b in sent[1]["content"]]
    results = [b["tool_use_id"] for b in sent[2]["content"]]
    assert uses == results and len(set(uses)) == 4
    assert all(len(i) <= 64 for i in uses) and uses[3] == "toolu_01A09q90qw90lq917835lq9"
    assert uses[0].startswith("call_aaaa")
    complete(server, "claude-x", {"messages": messages})  # the next turn: the same ids
    assert [b["id"] for b in server.last.body["messages"][1]["content"]] == uses


def test_a_short_key_is_cut_where_it_stands_alone_not_inside_a_word(
    server: FakeAnthropic,
) -> None:
    """A key sent is cut from upstream messages as a word of its own: a short one (here
    "quest") was cut from inside every word holding it ("re[redacted]"), for every
    provider of the process."""
    error = _error_echoing_key(server, "quest")
    assert "invalid value in request made with key [redacted]" in str(error)


def test_a_reset_connection_raises(server: FakeAnthropic) -> None:
    with pytest.raises(ProviderError) as caught:
        complete(server, "claude-x?reset=1", {"messages": user("hi")})
    assert caught.value.status is None


def test_no_error_carries_the_api_key(server: FakeAnthropic) -> None:
    errors: list[BaseException] = []
    for model in (
        "claude-x?echo_key=1",
        "claude-x?status=401",
        "claude-x?status=403",
        "claude-x?status=429",
        "claude-x?status=529",
        "claude-x?reset=1",
        "claude-x?context=1",
    ):
        for body in ({"messages": user("hi")}, {"messages": user("hi"), "stream": True}):
            with pytest.raises(ProviderError) as caught:
                if body.get("stream"):
                    stream(server, model, body)
                else:
                    complete(server, model, body)
            errors.append(caught.value)
    _, mid = stream_until_error(server, "claude-x?error_event=1", {"messages": user("hi")})
    errors.append(mid)
    assert server.last.headers["x-api-key"] == SECRET  # it was sent, and echoed back
    for error in errors:
        assert SECRET not in str(error)
        assert SECRET not in repr(error)
        assert SECRET not in repr(vars(error))


# -- wiring ------------------------------------------------------------------------------


def test_build_providers_builds_anthropic_clients(server: FakeAnthropic) -> None:
    registry = Registry.model_validate(
        {
            "providers": {
                "anth": {"kind": "anthropic", "base_url": server.url, "api_key_env": KEY_ENV},
                "local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
            },
            "models": {"claude": {"provider": "anth", "model": "claude-x"}},
            "routes": [{"name": "r", "examples": ["hello"], "target": "claude"}],
            "default": {"target": "claude"},
        }
    )
    providers = build_providers(registry, environ={KEY_ENV: SECRET})
    assert isinstance(providers["anth"], AnthropicProvider)
    assert type(providers["local"]).__name__ == "OpenAICompatProvider"

    async def run() -> dict[str, Any]:
        try:
            return await providers["anth"].complete(
                "claude-x", {"messages": user("wired")}, timeouts=TIMEOUTS
            )
        finally:
            for provider in providers.values():
                await provider.aclose()

    assert asyncio.run(run())["choices"][0]["message"]["content"] == "echo: wired"
