"""The Messages ⇄ chat-completions conversion alone: answers with tool calls, a stream
with text and tool-call deltas, images, and what is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from two_choices import two_choices

from llmroute.server.errors import GatewayError
from llmroute.server.messages_convert import StreamTranslator, to_chat_body, to_message


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    data: dict[str, Any] = {"id": "c1", "choices": [], **extra}
    if delta is not None or finish is not None:
        data["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return f"data: {json.dumps(data)}\n\n".encode()


def _events(raw: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for event in raw:
        kind, data = event.decode().strip().split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {payload['type']}"
        out.append(payload)
    return out


def test_an_answer_with_tool_calls_becomes_tool_use_blocks() -> None:
    data = {
        "id": "x1",
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "content": "Checking.",
                    "tool_calls": [
                        {"id": "t1", "function": {"name": "f", "arguments": '{"a": 1}'}},
                        {"id": "t2", "function": {"name": "g", "arguments": "not json"}},
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5},
    }
    message = to_message(data, "large")
    assert message["stop_reason"] == "tool_use" and message["model"] == "large"
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "t2", "name": "g", "input": {"arguments": "not json"}},
    ]
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 5}
    assert (
        to_message({"choices": [{"finish_reason": "length", "message": {}}]}, "m")["stop_reason"]
        == "max_tokens"
    )


# the other choice's index: 1, or one that is no choice's (a string, negative, a bool,
# null), read as choice 0's before (its words and tool call in choice 0's message), while the
# decision log's answer (`llmroute.sse.choice_zero`) left it out
@pytest.mark.parametrize("other", [1, "1", -1, True, None])
def test_a_stream_of_several_choices_becomes_choice_0s_message(other: object) -> None:
    """A registry's ``params: {n: 2}`` (Messages has no ``n``): choice 1's text, tool
    call and finish reason were read into the one message with choice 0's."""
    translator = StreamTranslator("small")
    raw: list[bytes] = []
    for event in [*two_choices(other), b"data: [DONE]\n\n"]:
        raw.extend(translator.feed(event))
    events = _events(raw)
    texts = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
    assert texts == ["Hel", "lo"]
    assert [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"] == [
        "text"
    ]
    assert next(e for e in events if e["type"] == "message_delta")["delta"]["stop_reason"] == (
        "end_turn"
    )


def test_a_stream_of_text_then_a_tool_call_becomes_messages_events() -> None:
    translator = StreamTranslator("small")
    raw: list[bytes] = []
    for event in (
        _chunk({"role": "assistant", "content": "Hel"}),
        _chunk({"content": "lo"}),
        _chunk(
            {"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "f", "arguments": ""}}]}
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        _chunk(finish="tool_calls"),
        _chunk(
            usage={
                "prompt_tokens": 4,
                "completion_tokens": 9,
                "prompt_tokens_details": {"cached_tokens": 3},
            }
        ),
        b"data: [DONE]\n\n",
    ):
        raw.extend(translator.feed(event))
    raw.extend(translator.close())  # after [DONE]: nothing more
    events = _events(raw)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["model"] == "small"
    assert events[2]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert events[5]["content_block"] == {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    assert events[5]["index"] == 1
    joined = "".join(e["delta"]["partial_json"] for e in events[6:8])
    assert json.loads(joined) == {"a": 1}
    assert events[9]["delta"]["stop_reason"] == "tool_use"
    # tokens read from the prompt cache counted apart from input_tokens, as Anthropic does
    assert events[9]["usage"] == {
        "input_tokens": 1,
        "output_tokens": 9,
        "cache_read_input_tokens": 3,
    }


def test_a_broken_stream_ends_with_an_error_event() -> None:
    translator = StreamTranslator("small")
    raw = list(translator.feed(_chunk({"content": "Hi"})))
    raw += translator.feed(b'data: {"error": {"message": "the upstream stream broke off"}}\n\n')
    raw += translator.feed(b"data: [DONE]\n\n")
    events = _events(raw)
    assert events[-1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "the upstream stream broke off"},
    }


def test_images_and_tool_results_map_to_chat_shapes() -> None:
    body = {
        "model": "auto",
        "max_tokens": 10,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "what is this?",
                        "cache_control": {"type": "ephemeral"},
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "boom"}],
                        "is_error": True,
                    },
                ],
            }
        ],
    }
    chat = to_chat_body(body)
    assert chat["stop"] == ["END"] and chat["user"] == "u-1"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["parallel_tool_calls"] is False
    tool, user = chat["messages"]
    assert tool == {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"}
    assert user["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAA"},
    }


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"system": 5}, "system"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "messages[0].content[0]",
        ),
        ({"max_tokens": True}, "max_tokens"),
        ({"thinking": {"type": "sometimes"}}, "thinking"),
        ({"thinking": {"type": "enabled", "budget_tokens": 500}}, "thinking.budget_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking.budget_tokens"),
    ],
)
def test_what_cannot_be_carried_is_a_400_naming_the_field(
    change: dict[str, Any], param: str
) -> None:
    body = {"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(GatewayError) as caught:
        to_chat_body({**body, **change})
    assert caught.value.status == 400 and caught.value.param == param


def test_thinking_is_kept_for_dispatch_to_say_in_the_models_dialect() -> None:
    body = {
        "model": "auto",
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "prove it"}],
    }
    assert to_chat_body(body)["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    off = to_chat_body({**body, "thinking": {"type": "disabled"}})
    assert off["thinking"] == {"type": "disabled"}
    counted = {k: v for k, v in body.items() if k != "max_tokens"}
    assert to_chat_body(counted, counting=True)["thinking"]["budget_tokens"] == 2048


def test_a_tool_results_images_open_the_user_message_after_the_tool_messages() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "B"}}
    body = {
        "model": "auto",
        "max_tokens": 10,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "a screenshot"}, image],
                    },
                    {"type": "tool_result", "tool_use_id": "t2", "content": "plain"},
                    {"type": "text", "text": "what do you see?"},
                ],
            }
        ],
    }
    first, second, user = to_chat_body(body)["messages"]
    assert first == {"role": "tool", "tool_call_id": "t1", "content": "a screenshot"}
    assert second == {"role": "tool", "tool_call_id": "t2", "content": "plain"}
    assert user["role"] == "user" and user["content"] == [
        {"type": "text", "text": "[images returned by tool call t1]"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,B"}},
        {"type": "text", "text": "what do you see?"},
    ]


def test_an_upstream_answer_without_an_id_still_names_the_message() -> None:
    data = {"choices": [{"message": {"content": "Hi."}, "finish_reason": "stop"}]}
    assert len(to_message(data, "small")["id"]) > len("msg_")
    translator = StreamTranslator("small")
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    raw = [*translator.feed(f"data: {json.dumps(chunk)}\n\n".encode()), *translator.close()]
    (start,) = [e for e in _events(raw) if e["type"] == "message_start"]
    assert len(start["message"]["id"]) > len("msg_")


def test_an_answer_calling_tools_stops_for_them_whatever_the_server_said() -> None:
    """Some servers finish a tool-calling answer with "stop": the agent loop waiting for
    stop_reason tool_use must still see it."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    data = {
        "id": "x",
        "choices": [{"message": {"content": None, "tool_calls": [call]}, "finish_reason": "stop"}],
    }
    assert to_message(data, "small")["stop_reason"] == "tool_use"
    plain = {"id": "x", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}
    assert to_message(plain, "small")["stop_reason"] == "end_turn"
    translator = StreamTranslator("small")
    raw = [
        *translator.feed(
            _chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]})
        ),
        *translator.feed(_chunk(finish="stop")),
        *translator.close(),
    ]
    (delta,) = [e for e in _events(raw) if e["type"] == "message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use"


def _chat(**extra: Any) -> dict[str, Any]:
    body = {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    return to_chat_body({**body, **extra})


def test_system_messages_in_the_conversation_stay_where_they_are() -> None:
    """The Messages API takes `role: system` turns (Claude Code sends them)."""
    said = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "and now?"},
    ]
    chat = _chat(messages=said)
    assert chat["messages"][2] == {"role": "system", "content": "Answer in French."}
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant", "system", "user"]
    with pytest.raises(GatewayError) as caught:
        _chat(messages=[{"role": "system", "content": [{"type": "image"}]}])
    assert caught.value.param == "messages[0].content[0]"


def test_no_tools_means_no_tool_choice_and_nothing_empty_is_sent() -> None:
    """OpenAI refuses `tools: []`, and a `tool_choice` or `parallel_tool_calls` without
    tools; an assistant turn of thinking alone is empty text (beside its thinking
    blocks), not null content."""
    chat = _chat(tools=[], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & chat.keys()
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "s"}
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [thinking]},
        {"role": "user", "content": "go on"},
    ]
    assert _chat(messages=turns)["messages"][1] == {
        "role": "assistant",
        "content": "",
        "thinking_blocks": [thinking],
    }


def test_structured_outputs_and_automatic_caching_are_carried() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = _chat(
        output_config={"format": {"type": "json_schema", "schema": schema}},
        cache_control={"type": "ephemeral"},
    )
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert chat["messages"][-1]["content"] == [
        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    ]
    beta = _chat(output_format={"type": "json_schema", "schema": schema})
    assert beta["response_format"]["json_schema"]["schema"] == schema
    for bad, param in (
        ({"output_config": {"format": {"type": "xml"}}}, "output_config.format"),
        ({"output_config": "json"}, "output_config"),
        ({"mcp_servers": [{"url": "https://x"}]}, "mcp_servers"),
        ({"container": "c1"}, "container"),
    ):
        with pytest.raises(GatewayError) as caught:
            _chat(**bad)
        assert caught.value.status == 400 and caught.value.param == param


def test_tool_input_is_always_an_object_and_a_refusal_is_said() -> None:
    """Arguments that are JSON but no object are handed over as `{"arguments": ...}` (a
    non-object `input` would be refused when the turn comes back); OpenAI's refusal is
    the answer's text with stop reason `refusal`, whole or streamed."""
    call = {"id": "t1", "function": {"name": "f", "arguments": "[1, 2]"}}
    data = {"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [call]}}]}
    (block,) = to_message(data, "m")["content"]
    assert block["input"] == {"arguments": "[1, 2]"}
    refused = {"content": None, "refusal": "I cannot help with that."}
    message = to_message({"choices": [{"finish_reason": "stop", "message": refused}]}, "m")
    assert message["stop_reason"] == "refusal"
    assert message["content"] == [{"type": "text", "text": "I cannot help with that."}]
    translator = StreamTranslator("m")
    raw = [
        *translator.feed(_chunk({"role": "assistant", "refusal": ""})),
        *translator.feed(_chunk({"refusal": "I cannot "})),
        *translator.feed(_chunk({"refusal": "help."}, finish="stop")),
        *translator.feed(b"data: [DONE]\n\n"),
    ]
    events = _events(raw)
    texts = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
    assert "".join(texts) == "I cannot help."
    (end,) = [e for e in events if e["type"] == "message_delta"]
    assert end["delta"]["stop_reason"] == "refusal"


def test_a_tool_call_an_upstream_left_without_an_id_gets_one() -> None:
    """An OpenAI-protocol server that leaves a tool call's id out (or sends ""): the
    client must still get an id it can send its tool_result back with, one per call (as
    the Responses front makes ``call_...``); it got "" for each, so two calls' results
    could not be told apart and an empty ``tool_use_id`` went back upstream."""
    calls = [
        {"function": {"name": "f", "arguments": "{}"}},
        {"id": "", "function": {"name": "g", "arguments": "{}"}},
    ]
    data = {"id": "x", "choices": [{"message": {"tool_calls": calls}, "finish_reason": "stop"}]}
    made = [b["id"] for b in to_message(data, "small")["content"] if b["type"] == "tool_use"]
    assert len(made) == 2 and len(set(made)) == 2
    assert all(i.startswith("toolu_") and 6 < len(i) <= 40 for i in made)
    translator = StreamTranslator("small")
    raw = [
        *translator.feed(_chunk({"tool_calls": [{"index": 0, "function": {"name": "f"}}]})),
        *translator.feed(_chunk({"tool_calls": [{"index": 1, "id": "", "function": {}}]})),
        *translator.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})),
        *translator.feed(_chunk(finish="tool_calls")),
        *translator.close(),
    ]
    started = [
        e["content_block"]["id"]
        for e in _events(raw)
        if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"
    ]
    assert len(started) == 2 and len(set(started)) == 2
    assert all(i.startswith("toolu_") and 6 < len(i) <= 40 for i in started)


def _blocks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The content blocks `events` make, checked as Anthropic's stream has them: one block
    open at a time, each started and stopped once, every delta in the open block."""
    blocks: list[dict[str, Any]] = []
    open_at: int | None = None
    for event in events:
        if event["type"] == "content_block_start":
            assert open_at is None and event["index"] == len(blocks)
            open_at = event["index"]
            blocks.append({**event["content_block"], "json": ""})
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_at, event
            delta = event["delta"]
            if delta["type"] == "input_json_delta":
                blocks[event["index"]]["json"] += delta["partial_json"]
            elif delta["type"] == "text_delta":
                blocks[event["index"]]["text"] += delta["text"]
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_at
            open_at = None
    assert open_at is None
    return blocks


def _call(index: int, arguments: str, **extra: Any) -> bytes:
    return _chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}, **extra}]})


def test_interleaved_parallel_calls_go_out_one_block_after_the_other() -> None:
    """An upstream that interleaves two calls' pieces (0, 1, 0, 1): block 0's later
    pieces went out after its content_block_stop, which a client that reads the input
    at the stop (or checks the order) took as the call's whole input."""
    translator = StreamTranslator("small")
    raw: list[bytes] = []
    for event in (
        _call(0, "", id="a", function={"name": "f", "arguments": ""}),
        _chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g"}}]}),
        _call(0, '{"x":'),
        _call(1, '{"y":'),
        _call(0, " 1}"),
        _call(1, " 2}"),
        _chunk({"content": "done"}),  # words after the calls: a block of their own
        _chunk(finish="tool_calls"),
        b"data: [DONE]\n\n",
    ):
        raw.extend(translator.feed(event))
    events = _events(raw)
    blocks = _blocks(events)
    assert [(b["type"], b.get("id"), b.get("name")) for b in blocks] == [
        ("tool_use", "a", "f"),
        ("tool_use", "b", "g"),
        ("text", None, None),
    ]
    assert [json.loads(b["json"]) for b in blocks[:2]] == [{"x": 1}, {"y": 2}]
    assert blocks[2]["text"] == "done"
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


# an index that is no index: negative, or not an int
_NO_INDEX = [-1, -2, "1", 1.0, True, None]


@pytest.mark.parametrize("index", _NO_INDEX, ids=[repr(i) for i in _NO_INDEX])
def test_a_call_whose_index_is_no_index_is_numbered_by_its_id(index: Any) -> None:
    """A call streamed with a negative index was read as call 0: its name and arguments
    went into call 0's block (``{"x":{ 1}}``), where the decision log kept it apart; as
    any index that is no index, it is the call its id names (a new id: the next call)."""
    translator = StreamTranslator("small")
    raw: list[bytes] = []
    for event in (
        _call(0, '{"x":', id="a", function={"name": "f", "arguments": '{"x":'}),
        _call(index, "{", id="b", function={"name": "g", "arguments": "{"}),
        _call(0, " 1}"),
        _call(index, "}"),
        _chunk(finish="tool_calls"),
        b"data: [DONE]\n\n",
    ):
        raw.extend(translator.feed(event))
    blocks = _blocks(_events(raw))
    assert [(b["id"], b["name"], json.loads(b["json"])) for b in blocks] == [
        ("a", "f", {"x": 1}),
        ("b", "g", {}),
    ]


def test_calls_one_after_the_other_stream_as_they_come() -> None:
    """The usual order (OpenAI's): each call's pieces go out as they come, the next
    call's block opening once the one before is whole."""
    translator = StreamTranslator("small")
    first = list(translator.feed(_call(0, "", id="a", function={"name": "f", "arguments": ""})))
    first += translator.feed(_call(0, '{"x": 1}'))
    second = list(translator.feed(_call(1, "", id="b", function={"name": "g", "arguments": ""})))
    second += translator.feed(_call(1, "{}"))
    rest = list(translator.feed(b"data: [DONE]\n\n"))
    assert [e["type"] for e in _events(first)] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    assert [e["type"] for e in _events(second)] == [
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
    ]
    blocks = _blocks(_events(first + second + rest))
    assert [json.loads(b["json"]) for b in blocks] == [{"x": 1}, {}]


def test_interleaved_calls_cut_by_max_tokens_are_sent_at_the_streams_end() -> None:
    """Interleaved calls neither of whose arguments became whole JSON (the answer cut by
    its token bound, no ``[DONE]``): the held call is still sent, after the open one,
    and the stop reason and usage are the upstream's."""
    translator = StreamTranslator("small")
    raw: list[bytes] = []
    for event in (
        _call(0, '{"x": "a', id="a", function={"name": "f", "arguments": '{"x": "a'}),
        _call(1, '{"y": "b', id="b", function={"name": "g", "arguments": '{"y": "b'}),
        _call(0, "bc"),
        _call(1, "cd"),
        _chunk(finish="length"),
        _chunk(usage={"prompt_tokens": 5, "completion_tokens": 7}),
    ):
        raw.extend(translator.feed(event))
    raw.extend(translator.close())
    events = _events(raw)
    blocks = _blocks(events)
    assert [(b["id"], b["json"]) for b in blocks] == [("a", '{"x": "abc'), ("b", '{"y": "bcd')]
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2]["usage"] == {"input_tokens": 5, "output_tokens": 7}


def test_a_calls_piece_after_its_block_closed_is_left_out() -> None:
    """Words between a call's pieces close its block: a piece that comes after cannot go
    in it (nor in the words' block), and is left out rather than break the stream."""
    translator = StreamTranslator("small")
    raw: list[bytes] = []
    for event in (
        _call(0, '{"x":', id="a", function={"name": "f", "arguments": '{"x":'}),
        _chunk({"content": "hm"}),
        _call(0, " 1}"),
        b"data: [DONE]\n\n",
    ):
        raw.extend(translator.feed(event))
    blocks = _blocks(_events(raw))
    assert [(b["type"], b["json"]) for b in blocks] == [("tool_use", '{"x":'), ("text", "")]
