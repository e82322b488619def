"""The Responses ⇄ chat-completions conversion alone: input items, formats, and the
stream translation's order, a break and parallel tool calls."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from two_choices import two_choices

from llmroute.server.errors import GatewayError
from llmroute.server.responses_convert import input_items, resolved, to_chat_body, to_response
from llmroute.server.responses_reasoning import blocks_of, encoded
from llmroute.server.responses_stream import ResponsesStream


def test_input_items_become_chat_messages() -> None:
    body = {
        "model": "auto",
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "input": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is in this picture?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Let me look."}],
            },
            {"type": "function_call", "call_id": "c1", "name": "zoom", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "crop", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "zoomed"},
            {"type": "function_call_output", "call_id": "c2", "output": "cropped"},
        ],
    }
    chat = to_chat_body(body)
    assert chat["reasoning_effort"] == "high"
    assert chat["response_format"]["json_schema"] == {"name": "w", "schema": {"type": "object"}}
    developer, user, assistant, first, second = chat["messages"]
    assert developer == {"role": "developer", "content": "be brief"}
    assert user["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA"},
    }
    assert assistant["content"] == "Let me look."
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]  # one turn, two calls
    assert (first["tool_call_id"], second["content"]) == ("c1", "cropped")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": []}, "input"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0]"),
        ({"tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format"),
    ],
)
def test_what_cannot_be_carried_is_a_400_naming_the_field(
    change: dict[str, Any], param: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        to_chat_body({"model": "auto", "input": "hi", **change})
    assert caught.value.status == 400 and caught.value.param == param


def test_a_completion_becomes_a_response_with_its_tool_calls() -> None:
    data = {
        "id": "c9",
        "created": 7,
        "choices": [
            {
                "message": {
                    "content": "Checking.",
                    "tool_calls": [
                        {"id": "t1", "function": {"name": "f", "arguments": '{"a": 1}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
    }
    response = to_response(data, "small", {"model": "auto", "input": "x", "tools": []})
    assert response["id"] == "resp_c9" and response["status"] == "completed"
    message, call = response["output"]
    assert message["content"][0] == {"type": "output_text", "text": "Checking.", "annotations": []}
    assert call == {
        "type": "function_call",
        "id": "fc_t1",
        "call_id": "t1",
        "name": "f",
        "arguments": '{"a": 1}',
        "status": "completed",
    }
    assert response["usage"]["total_tokens"] == 8 and response["store"] is False


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    data: dict[str, Any] = {"id": "c1", "choices": [], **extra}
    if delta is not None or finish is not None:
        data["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return f"data: {json.dumps(data)}\n\n".encode()


def _events(stream: ResponsesStream, chunks: list[bytes]) -> list[dict[str, Any]]:
    out = [e for chunk in chunks for e in stream.feed(chunk)] + list(stream.close())
    parsed = []
    for event in out:
        kind, data = event.decode().strip().split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {payload['type']}"
        parsed.append(payload)
    return parsed


def test_parallel_tool_calls_stream_as_two_items() -> None:
    calls = [
        {"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x":'}},
        {"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}},
    ]
    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [
            _chunk({"tool_calls": calls}),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
            _chunk(finish="tool_calls"),
            b"data: [DONE]\n\n",
        ],
    )
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["output_index"], e["arguments"]) for e in done] == [(0, '{"x": 1}'), (1, "{}")]
    # the pieces interleave (0, 1, 0): every item stays open until the end, so none comes
    # after its item's done (Messages holds such a call back: one block open at a time)
    closed = set()
    for event in events:
        if event["type"] == "response.output_item.done":
            closed.add(event["output_index"])
        elif event["type"] == "response.function_call_arguments.delta":
            assert event["output_index"] not in closed
    final = events[-1]
    assert final["type"] == "response.completed"
    assert [i["call_id"] for i in final["response"]["output"]] == ["a", "b"]


def test_parallel_calls_streamed_without_index_stay_apart() -> None:
    """Gemini's OpenAI-compatible endpoint streams each call whole, with its id and no
    `index`: read as index 0, three calls were merged into one (arguments `{..}{..}{}`)."""
    calls = [
        [{"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
        [{"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"y": '}}],
        [{"function": {"arguments": "2}"}}],  # neither: the last call goes on
        [{"id": "c", "type": "function", "function": {"name": "h", "arguments": "{}"}}],
    ]
    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [
            *(_chunk({"tool_calls": c}) for c in calls),
            _chunk(finish="tool_calls"),
            b"data: [DONE]\n\n",
        ],
    )
    output = events[-1]["response"]["output"]
    assert [(i["call_id"], i["name"], i["arguments"]) for i in output] == [
        ("a", "f", '{"x": 1}'),
        ("b", "g", '{"y": 2}'),
        ("c", "h", "{}"),
    ]


# an index that is no index: negative, or not an int
_NO_INDEX = [-1, -2, "1", 1.0, True, None]


@pytest.mark.parametrize("index", _NO_INDEX, ids=[repr(i) for i in _NO_INDEX])
def test_a_call_whose_index_is_no_index_is_numbered_by_its_id(index: Any) -> None:
    """A call streamed with a negative index was read as call 0: one item named ``f``
    with both calls' arguments run together (``{"x":{ 1}}``), where the decision log kept
    it apart; as any index that is no index, it is the call its id names."""
    calls = [
        {"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x":'}},
        {"index": index, "id": "b", "function": {"name": "g", "arguments": "{"}},
        {"index": 0, "function": {"arguments": " 1}"}},
        {"index": index, "function": {"arguments": "}"}},
    ]
    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [
            *(_chunk({"tool_calls": [c]}) for c in calls),
            _chunk(finish="tool_calls"),
            b"data: [DONE]\n\n",
        ],
    )
    output = events[-1]["response"]["output"]
    assert [(i["call_id"], i["name"], i["arguments"]) for i in output] == [
        ("a", "f", '{"x": 1}'),
        ("b", "g", "{}"),
    ]


def test_another_choices_calls_do_not_number_choice_0s() -> None:
    """A registry's ``n``: choice 1's calls without an index were numbered with choice
    0's, so that a piece of choice 0's call with neither index nor id (the last call
    goes on) went to the number choice 1's last call was given: an item of its own,
    where the decision log read choice 0's call whole."""

    def chunk(choice: int, call: dict[str, Any]) -> bytes:
        data = {"id": "c1", "choices": [{"index": choice, "delta": {"tool_calls": [call]}}]}
        return f"data: {json.dumps(data)}\n\n".encode()

    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [
            chunk(0, {"id": "y", "function": {"name": "f", "arguments": "{"}}),
            chunk(1, {"id": "x", "function": {"name": "g", "arguments": "{}"}}),
            chunk(0, {"function": {"arguments": "}"}}),
            _chunk(finish="tool_calls"),
            b"data: [DONE]\n\n",
        ],
    )
    output = events[-1]["response"]["output"]
    assert [(i["call_id"], i["name"], i["arguments"]) for i in output] == [("y", "f", "{}")]


# the other choice's index: 1, or one that is no choice's (a string, negative, a bool,
# null), read as choice 0's before (its words and tool call in choice 0's response), while the
# decision log's answer (`llmroute.sse.choice_zero`) left it out
@pytest.mark.parametrize("other", [1, "1", -1, True, None])
def test_a_stream_of_several_choices_becomes_choice_0s_response(other: object) -> None:
    """A registry's ``params: {n: 2}`` (Responses has no ``n``): choice 1's text, tool
    call and finish reason were read into the one response with choice 0's, as a
    whole answer, `to_response`, never did."""
    usage = {"prompt_tokens": 5, "completion_tokens": 6}
    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [*two_choices(other), _chunk(usage=usage), b"data: [DONE]\n\n"],
    )
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["Hel", "lo"]
    final = events[-1]
    assert final["type"] == "response.completed"
    (item,) = final["response"]["output"]
    assert item["type"] == "message" and item["content"][0]["text"] == "Hello"
    assert final["response"]["status"] == "completed"
    assert final["response"]["usage"]["output_tokens"] == 6  # every choice's, as sent


def test_a_broken_stream_ends_with_response_failed() -> None:
    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [_chunk({"content": "Hel"}), b'data: {"error": {"message": "upstream went away"}}\n\n'],
    )
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"]["message"] == "upstream went away"
    # the text that had come is kept in the failed response (and so in the store)
    (item,) = events[-1]["response"]["output"]
    assert item["content"][0]["text"] == "Hel" and item["status"] == "incomplete"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


PATCH_TOOL = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Apply a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
}


def test_a_custom_tool_is_a_function_of_one_string() -> None:
    chat = to_chat_body(
        {
            "model": "auto",
            "tools": [PATCH_TOOL],
            "tool_choice": {"type": "custom", "name": "apply_patch"},
            "input": [
                {"role": "user", "content": "fix the bug"},
                {"type": "custom_tool_call", "call_id": "p1", "name": "apply_patch", "input": "*x"},
                {"type": "custom_tool_call_output", "call_id": "p1", "output": "applied"},
            ],
        }
    )
    function = chat["tools"][0]["function"]
    assert function["name"] == "apply_patch"
    assert function["parameters"]["required"] == ["input"]
    assert "lark grammar:\nstart: /.+/" in function["description"]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}
    _, assistant, tool = chat["messages"]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"input": "*x"}
    assert tool == {"role": "tool", "tool_call_id": "p1", "content": "applied"}


def test_a_custom_tools_call_comes_back_as_its_input() -> None:
    call = {"id": "p2", "function": {"name": "apply_patch", "arguments": '{"input": "*** Begin"}'}}
    choice = {"message": {"tool_calls": [call]}, "finish_reason": "tool_calls"}
    data = {"id": "c", "choices": [choice]}
    body = {"model": "auto", "input": "x", "tools": [PATCH_TOOL]}
    (item,) = to_response(data, "small", body)["output"]
    assert (item["type"], item["call_id"], item["input"]) == ("custom_tool_call", "p2", "*** Begin")
    first_piece = {"name": "apply_patch", "arguments": '{"inp'}
    events = _events(
        ResponsesStream("small", body),
        [
            _chunk({"tool_calls": [{"index": 0, "id": "p2", "function": first_piece}]}),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ut": "*** Begin"}'}}]}),
            b"data: [DONE]\n\n",
        ],
    )
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" not in kinds
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    assert done["input"] == "*** Begin"
    assert events[-1]["response"]["output"][0]["input"] == "*** Begin"


def test_a_continuation_carries_the_earlier_items_after_its_own_instructions() -> None:
    earlier = [
        {
            "id": "i1",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "id": "m1",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "hello"}],
        },
        {"type": "function_call", "id": "fc_c1", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]
    body = {
        "model": "auto",
        "instructions": "be brief",
        "previous_response_id": "resp_1",
        "input": [{"type": "function_call_output", "call_id": "c1", "output": "42"}],
    }
    chat = to_chat_body(body, earlier)
    assert chat["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "hello",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    with pytest.raises(GatewayError) as caught:  # where nothing is kept
        to_chat_body(body)
    assert caught.value.param == "previous_response_id"
    with pytest.raises(GatewayError) as caught:  # the client's own input is checked first
        to_chat_body({**body, "input": [{"role": "tool"}]}, earlier)
    assert caught.value.param == "input[0].role"
    with pytest.raises(GatewayError) as caught:
        to_chat_body({**body, "store": "yes"}, earlier)
    assert caught.value.param == "store"


def test_the_input_is_kept_as_typed_items() -> None:
    """With what OpenAI lists and the SDK's typed models need: a `status` on every item,
    `annotations` on an `output_text` part (`part.annotations` was None)."""
    assert input_items({"input": "hi"}) == [
        {
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": "hi"}],
        }
    ]
    given = [
        {"role": "assistant", "content": "before"},
        {"type": "function_call_output", "call_id": "c", "output": "x"},
    ]
    assert input_items({"input": given}) == [
        {
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "before", "annotations": []}],
        },
        {**given[1], "status": "completed"},
    ]


def test_a_kept_response_has_the_id_it_is_kept_under() -> None:
    data = {"id": "c9", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}
    body = {"model": "auto", "input": "x", "previous_response_id": "resp_0"}
    response = to_response(data, "small", body, "resp_abc", stored=True)
    assert response["id"] == "resp_abc" and response["store"] is True
    assert response["output"][0]["id"] == "msg_abc"
    assert response["previous_response_id"] == "resp_0"
    stream = ResponsesStream("small", body, "resp_abc", stored=True)
    events = _events(
        stream, [_chunk({"content": "hi"}), _chunk(finish="stop"), b"data: [DONE]\n\n"]
    )
    final = events[-1]["response"]
    assert final["id"] == "resp_abc" and final["store"] is True
    assert final["output"][0]["id"] == "msg_abc_0"
    assert stream.final == final  # what the front keeps


def test_a_failed_stream_is_kept_as_failed() -> None:
    """As OpenAI keeps it: a later GET finds it failed, with what had come."""
    stream = ResponsesStream("small", {"model": "auto", "input": "x"}, "resp_abc", stored=True)
    _events(stream, [_chunk({"content": "Hel"}), b'data: {"error": {"message": "gone"}}\n\n'])
    assert stream.final is not None and stream.final["status"] == "failed"
    assert stream.final["error"] == {"code": "server_error", "message": "gone"}
    assert stream.final_event().startswith(b"event: response.failed\n")


def test_an_item_reference_is_the_item_it_names_in_the_conversation() -> None:
    earlier = [
        {"id": "msg_1", "type": "message", "role": "user", "content": "hi"},
        {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]
    body = {
        "model": "auto",
        "input": [{"type": "item_reference", "id": "msg_1"}, {"role": "user", "content": "again"}],
    }
    again = resolved(body, earlier)
    assert again["input"][0] == {"type": "message", "role": "user", "content": "hi"}
    assert body["input"][0]["type"] == "item_reference"  # the request itself untouched
    assert [m["content"] for m in to_chat_body(again, earlier)["messages"]][-2:] == ["hi", "again"]
    plain = {"model": "auto", "input": "hi"}
    assert resolved(plain, earlier) is plain
    with pytest.raises(GatewayError) as caught:
        resolved({**body, "input": [{"type": "item_reference", "id": "msg_9"}]}, earlier)
    assert caught.value.param == "input[0]" and "msg_9" in caught.value.message


def test_an_upstream_answer_without_an_id_still_names_the_response() -> None:
    data = {"choices": [{"message": {"content": "Hi."}, "finish_reason": "stop"}]}
    response = to_response(data, "small", {"model": "auto", "input": "x"})
    assert response["id"].startswith("resp_") and len(response["id"]) > len("resp_")
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [f"data: {json.dumps(chunk)}\n\n".encode(), _chunk(finish="stop"), b"data: [DONE]\n\n"],
    )
    named = {e["response"]["id"] for e in events if "response" in e}
    assert len(named) == 1 and len(named.pop()) > len("resp_")


def test_a_tools_images_follow_its_output_in_a_user_message() -> None:
    """A tool's output may hold images (a screenshot): a chat `tool` message holds text
    only, so they follow the tool messages in a user message (was a 400)."""
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    body = {
        "model": "auto",
        "input": [
            {"role": "user", "content": "what is on screen?"},
            {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "read", "arguments": "{}"},
            {
                "type": "function_call_output",
                "call_id": "c1",
                "output": [{"type": "input_text", "text": "taken"}, image],
            },
            {"type": "function_call_output", "call_id": "c2", "output": "plain"},
            {"role": "user", "content": "describe it"},
        ],
    }
    messages = to_chat_body(body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user", "user"]
    assert messages[2] == {"role": "tool", "tool_call_id": "c1", "content": "taken"}
    assert messages[4]["content"] == [
        {"type": "text", "text": "[images returned by tool call c1]"},
        {"type": "image_url", "image_url": {"url": image["image_url"]}},
    ]
    assert messages[5] == {"role": "user", "content": "describe it"}


WEATHER_TOOL = {"type": "function", "name": "weather", "parameters": {"type": "object"}}


@pytest.mark.parametrize(
    "extra",
    [
        {"tool_choice": "auto"},
        {"tool_choice": "none", "parallel_tool_calls": False},
        {"tools": [], "tool_choice": "required", "parallel_tool_calls": True},
    ],
)
def test_no_tool_settings_go_without_tools(extra: dict[str, Any]) -> None:
    """OpenAI's chat API refuses `tool_choice` and `parallel_tool_calls` without `tools`
    (400 "only allowed when 'tools' are specified"), which the Responses API takes."""
    chat = to_chat_body({"model": "auto", "input": "hi", **extra})
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & chat.keys()


def test_tool_settings_go_with_tools() -> None:
    body = {"tools": [WEATHER_TOOL], "tool_choice": "required", "parallel_tool_calls": False}
    chat = to_chat_body({"model": "auto", "input": "hi", **body})
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    with pytest.raises(GatewayError) as bad:  # still checked without tools
        to_chat_body({"model": "auto", "input": "hi", "tool_choice": "sometimes"})
    assert bad.value.param == "tool_choice"


def test_a_refusal_is_a_refusal_part() -> None:
    """OpenAI's `refusal` (structured outputs) was dropped: an empty, completed response."""
    message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    data = {"id": "x", "choices": [{"message": message, "finish_reason": "stop"}]}
    (item,) = to_response(data, "small", {"model": "auto", "input": "x"})["output"]
    assert item["type"] == "message"
    assert item["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]


def test_a_streamed_refusal_is_a_refusal_part() -> None:
    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [
            _chunk({"role": "assistant", "content": ""}),
            _chunk({"refusal": "I can't "}),
            _chunk({"refusal": "help."}),
            _chunk(finish="stop"),
            b"data: [DONE]\n\n",
        ],
    )
    assert [e["type"] for e in events[2:]] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-4]["refusal"] == "I can't help."
    (item,) = events[-1]["response"]["output"]
    assert item["content"] == [{"type": "refusal", "refusal": "I can't help."}]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_a_call_without_an_id_gets_one() -> None:
    """An upstream that leaves a tool call's id out (the stream made one up; a whole
    answer said `call_id: ""`, which the client cannot answer)."""
    calls = [{"type": "function", "function": {"name": "f", "arguments": "{}"}}] * 2
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    data = {"id": "x", "choices": [{"message": message, "finish_reason": "tool_calls"}]}
    output = to_response(data, "small", {"model": "auto", "input": "x"})["output"]
    ids = [item["call_id"] for item in output]
    assert all(ids) and len(set(ids)) == 2


def test_a_prompt_cache_key_goes_on_to_the_chat_request() -> None:
    """OpenAI's chat API takes it (it steers requests to the prompt cache); it was
    dropped, so agents' cache hit rates fell through the gateway."""
    chat = to_chat_body({"model": "auto", "input": "hi", "prompt_cache_key": "agent-7"})
    assert chat["prompt_cache_key"] == "agent-7"
    assert "prompt_cache_key" not in to_chat_body({"model": "auto", "input": "hi"})


def test_the_message_a_length_cut_fell_in_is_incomplete_whole_or_streamed() -> None:
    """OpenAI marks the item the answer was cut in `incomplete`, not `completed`."""
    cut = {"id": "c", "choices": [{"finish_reason": "length", "message": {"content": "Hel"}}]}
    response = to_response(cut, "small", {"model": "auto", "input": "x"})
    assert response["status"] == "incomplete"
    assert [item["status"] for item in response["output"]] == ["incomplete"]
    whole = {"id": "c", "choices": [{"finish_reason": "stop", "message": {"content": "Hi"}}]}
    assert (
        to_response(whole, "small", {"model": "auto", "input": "x"})["output"][0]["status"]
        == "completed"
    )
    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [_chunk({"content": "Hel"}), _chunk(finish="length"), b"data: [DONE]\n\n"],
    )
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["item"]["status"] for e in done] == ["incomplete"]
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"


def test_a_response_repeats_truncation_the_end_user_and_the_cache_key() -> None:
    """As OpenAI's response object does (`truncation` said `disabled` when not asked)."""
    whole = {"id": "c", "choices": [{"finish_reason": "stop", "message": {"content": "Hi"}}]}
    body = {"model": "auto", "input": "x", "safety_identifier": "u-9", "prompt_cache_key": "k"}
    response = to_response(whole, "small", body)
    assert response["truncation"] == "disabled"
    assert response["safety_identifier"] == "u-9" and response["prompt_cache_key"] == "k"
    asked = to_response(whole, "small", {**body, "truncation": "auto"})
    assert asked["truncation"] == "auto"


SIGNED = {"type": "thinking", "thinking": "Let me think.", "signature": "c2ln"}
HIDDEN = {"type": "redacted_thinking", "data": "b3BhcXVl"}


def test_reasoning_given_back_goes_on_the_turn_it_led_to_or_nowhere() -> None:
    """Our reasoning item gives the next assistant message its blocks; one that does
    not decode (OpenAI's own encrypted reasoning, junk, an unsigned block, a non-list)
    is dropped without a 400, as is one no assistant turn follows."""
    ours = encoded([SIGNED, HIDDEN])
    prefix = ours[: ours.index(".v1.") + 4]
    junk = [
        "gAAAAABoSomethingOpenAIEncrypted",
        prefix + "!!!",
        prefix + "_w==",  # not UTF-8
        encoded([{"type": "thinking", "thinking": "x"}]),  # no signature
        prefix + base64.urlsafe_b64encode(b'{"type": "thinking"}').decode(),
        None,
        7,
    ]
    items: list[Any] = [{"role": "user", "content": "q"}]
    items += [{"type": "reasoning", "summary": [], "encrypted_content": j} for j in junk]
    items += [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": ours},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "x"},
        {"type": "reasoning", "summary": [], "encrypted_content": ours},
        {"role": "user", "content": "next"},
    ]
    messages = to_chat_body({"model": "auto", "input": items})["messages"]
    assert messages[1]["thinking_blocks"] == [SIGNED, HIDDEN]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert all("thinking_blocks" not in m for m in messages[2:])


def test_a_completions_thinking_is_a_reasoning_item_first() -> None:
    message = {
        "role": "assistant",
        "content": "Reading it.",
        "reasoning_content": "Let me think.",
        "thinking_blocks": [SIGNED, HIDDEN, {"type": "thinking", "thinking": "unsigned"}],
    }
    data = {"id": "x", "choices": [{"message": message, "finish_reason": "stop"}]}
    reasoning, text = to_response(data, "sonnet", {"model": "auto", "input": "q"})["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"] == "rs_x"
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Let me think."}]
    assert blocks_of(reasoning) == [SIGNED, HIDDEN]
    assert text["type"] == "message"


def test_a_stream_that_breaks_while_thinking_keeps_the_reasoning_incomplete() -> None:
    piece = {
        "reasoning_content": "Let me",
        "thinking_blocks": [{"type": "thinking", "thinking": "Let me"}],
    }
    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [_chunk(piece), b'data: {"error": {"message": "upstream went away"}}\n\n'],
    )
    assert events[-1]["type"] == "response.failed"
    (item,) = events[-1]["response"]["output"]
    assert item["type"] == "reasoning" and item["status"] == "incomplete"
    assert item["content"] == [{"type": "reasoning_text", "text": "Let me"}]
    assert item["encrypted_content"] is None  # an unsigned block cannot be sent back


def test_a_length_cut_while_thinking_leaves_the_reasoning_incomplete() -> None:
    """Nothing came after the thinking: the cut fell in it, whole or streamed."""
    message = {"role": "assistant", "content": None, "reasoning_content": "Let me"}
    data = {"id": "x", "choices": [{"message": message, "finish_reason": "length"}]}
    (whole,) = to_response(data, "deep", {"model": "auto", "input": "q"})["output"]
    events = _events(
        ResponsesStream("small", {"model": "auto", "input": "x"}),
        [_chunk({"reasoning_content": "Let me"}), _chunk(finish="length"), b"data: [DONE]\n\n"],
    )
    (streamed,) = events[-1]["response"]["output"]
    assert events[-1]["type"] == "response.incomplete"
    assert whole["status"] == streamed["status"] == "incomplete"
    assert streamed["content"] == whole["content"]
