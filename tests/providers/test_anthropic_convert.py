"""OpenAI chat-completions ⇄ Anthropic Messages conversion, without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmroute.errors import BeyondModel, UpstreamRejected
from llmroute.providers._anthropic_convert import (
    DEFAULT_MAX_TOKENS,
    finish_reason,
    to_chat_completion,
    to_messages_request,
    without_thinking_blocks,
)
from llmroute.providers.anthropic import StreamTranslator


def convert(body: dict[str, Any]) -> dict[str, Any]:
    return to_messages_request("anth", "claude-x", body)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_system_and_developer_messages_become_the_system_prompt() -> None:
    payload = convert(
        {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "user", "content": "hi"},
            ],
        }
    )
    assert payload["system"] == "Be brief.\n\nUse French."
    assert payload["model"] == "claude-x"
    assert payload["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert payload["max_tokens"] == DEFAULT_MAX_TOKENS


def test_consecutive_same_role_messages_are_merged() -> None:
    payload = convert(
        {
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "three"},
                {"role": "assistant", "content": ""},  # empty: dropped, not sent empty
                {"role": "user", "content": "four"},
            ]
        }
    )
    roles = [m["role"] for m in payload["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert [b["text"] for b in payload["messages"][0]["content"]] == ["one", "two"]
    assert payload["messages"][1]["content"] == [{"type": "text", "text": "three"}]


def test_images_by_data_url_and_by_http_url() -> None:
    parts = [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    content = convert({"messages": [{"role": "user", "content": parts}]})["messages"][0]["content"]
    assert content[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert content[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }


@pytest.mark.parametrize(
    ("part", "names"),
    [
        ({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}, "image"),
        ({"type": "image_url", "image_url": {"url": "data:image/png,raw"}}, "image"),
        ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, "input_audio"),
    ],
)
def test_unusable_content_parts_are_rejected(part: dict[str, Any], names: str) -> None:
    with pytest.raises(UpstreamRejected, match=names) as caught:
        convert({"messages": [{"role": "user", "content": [part]}]})
    assert caught.value.status == 400
    assert not caught.value.retryable


def test_tool_calls_and_results_become_tool_use_and_tool_result_blocks() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
    }
    second = {**call, "id": "call_2", "function": {"name": "time", "arguments": ""}}
    payload = convert(
        {
            "messages": [
                {"role": "user", "content": "weather and time in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call, second]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "noon"}],
                },
                {"role": "user", "content": "thanks"},
            ]
        }
    )
    assistant, results = payload["messages"][1], payload["messages"][2]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "time", "input": {}},
        ],
    }
    assert results["role"] == "user"
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
        {"type": "text", "text": "thanks"},  # the user's next words join the same turn
    ]
    assert len(payload["messages"]) == 3


def test_tool_call_arguments_that_are_not_json_are_rejected() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "weather", "arguments": "{city"}}
    with pytest.raises(UpstreamRejected, match="'weather' are not a JSON object") as caught:
        convert({"messages": [*user("hi"), {"role": "assistant", "tool_calls": [call]}]})
    assert caught.value.status == 400


def test_parameters_are_translated() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    payload = convert(
        {
            "messages": user("hi"),
            "max_completion_tokens": 50,
            "max_tokens": 99,
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "tools": [tool],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "user": "u-42",
            "stream": True,
            "stream_options": {"include_usage": True},
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.5,
            "logit_bias": {"1": 2},
            "response_format": {"type": "text"},
            "n": 1,
            "logprobs": False,
        }
    )
    assert payload == {
        "model": "claude-x",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "temperature": 1.0,  # clamped to Anthropic's range; top_p left out beside it
        "stop_sequences": ["END"],
        "tools": [
            {
                "name": "weather",
                "description": "Weather of a city",
                "input_schema": tool["function"]["parameters"],  # type: ignore[index]
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-42"},
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    payload = convert({"messages": user("hi"), "tools": tools, "tool_choice": choice})
    assert payload["tool_choice"] == expected
    assert payload["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


def test_max_tokens_and_stop_lists() -> None:
    payload = convert({"messages": user("hi"), "max_tokens": 12, "stop": ["a", "b"]})
    assert payload["max_tokens"] == 12
    assert payload["stop_sequences"] == ["a", "b"]
    assert "tool_choice" not in convert({"messages": user("hi"), "tool_choice": "auto"})


AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


@pytest.mark.parametrize(
    ("extra", "names", "beyond", "param"),
    [
        ({"n": 2}, "'n'", True, "n"),
        ({"logprobs": True, "top_logprobs": 3}, "'logprobs'", True, "logprobs"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "'audio'", True, "audio"),
        (
            {"messages": [{"role": "user", "content": [AUDIO]}]},
            "'input_audio'",
            True,
            "messages[0].content",
        ),
        ({"response_format": {"type": "grammar"}}, "'response_format'", False, "response_format"),
        (
            {
                "tool_choice": "sometimes",
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            "'tool_choice'",
            False,
            "tool_choice",
        ),
        ({"tools": [{"type": "code_interpreter"}]}, "'tools'", False, "tools"),
        (
            {"messages": [{"role": "user", "content": [{"type": "nonsense"}]}]},
            "nonsense",
            False,
            "messages[0].content",
        ),
        ({"functions": [{"name": "f", "parameters": {}}]}, "'functions'", True, "functions"),
        ({"function_call": {"name": "f"}}, "'function_call'", True, "function_call"),
        ({"web_search_options": {}}, "'web_search_options'", True, "web_search_options"),
        ({"messages": [{"role": "user", "content": ""}]}, "no text", False, "messages"),
    ],
)
def test_what_cannot_be_honoured_is_rejected(
    extra: dict[str, Any], names: str, beyond: bool, param: str
) -> None:
    """`BeyondModel` (another model may honour it: dispatch hands over) or a plain
    `UpstreamRejected` (no model would), naming the field at fault as OpenAI does."""
    with pytest.raises(UpstreamRejected, match=names) as caught:
        convert({"messages": user("hi"), **extra})
    assert caught.value.status == 400
    assert isinstance(caught.value, BeyondModel) is beyond
    assert caught.value.param == param


def test_json_modes_become_a_system_instruction() -> None:
    payload = convert(
        {
            "messages": [{"role": "system", "content": "Be terse."}, *user("hi")],
            "response_format": {"type": "json_object"},
        }
    )
    assert payload["system"].startswith("Be terse.\n\n")
    assert "JSON object" in payload["system"]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    payload = convert({"messages": user("hi"), "response_format": fmt})
    assert json.dumps(schema) in payload["system"]


def test_thinking_blocks_open_their_assistant_turn_byte_for_byte() -> None:
    """LiteLLM's ``thinking_blocks`` go first in the turn, as they came; a thinking
    block without a signature (Anthropic refuses it), or anything else, is left out."""
    signed = {"type": "thinking", "thinking": "hmm\n", "signature": "EqoB+/x=="}
    hidden = {"type": "redacted_thinking", "data": "opaque"}
    blocks = [signed, {"type": "thinking", "thinking": "unsigned"}, {"type": "text"}, hidden]
    call = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        *user("hi"),
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [call],
            "thinking_blocks": blocks,
            "reasoning_content": "hmm",
        },
        {"role": "tool", "tool_call_id": "t1", "content": "42"},
    ]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    payload = convert({"messages": messages, "thinking": thinking})
    assert payload["messages"][1]["content"] == [
        signed,
        hidden,
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
    ]


def test_a_tool_loop_without_thinking_leaves_its_thinking_blocks_out() -> None:
    """Without thinking, Anthropic refuses thinking blocks in the final assistant turn,
    which a tool loop in progress is, every step of it ("an `assistant` message in the
    final position cannot contain `thinking`"); an earlier turn's blocks it drops itself."""
    signed = {"type": "thinking", "thinking": "hmm", "signature": "c2ln"}

    def step(i: int) -> list[dict[str, Any]]:
        call = {"id": f"t{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        turn = {"role": "assistant", "content": None, "tool_calls": [call]}
        result = {"role": "tool", "tool_call_id": f"t{i}", "content": "42"}
        return [{**turn, "thinking_blocks": [signed]}, result]

    earlier = {"role": "assistant", "content": "Done.", "thinking_blocks": [signed]}
    messages = [*user("hi"), earlier, *user("and now?"), *step(1), *user("also"), *step(2)]
    turns = convert({"messages": messages})["messages"]
    kinds = [[b["type"] for b in turn["content"]] for turn in turns]
    assert kinds == [
        ["text"],
        ["thinking", "text"],
        ["text"],
        ["tool_use"],
        ["tool_result", "text"],
        ["tool_use"],
        ["tool_result"],
    ]


def test_a_prefill_without_thinking_leaves_its_thinking_blocks_out() -> None:
    """Anthropic refuses thinking blocks in a final assistant turn unless thinking is on."""
    signed = {"type": "thinking", "thinking": "hmm", "signature": "c2ln"}
    prefill = {"role": "assistant", "content": "{", "thinking_blocks": [signed]}
    payload = convert({"messages": [*user("hi"), prefill]})
    assert payload["messages"][-1]["content"] == [{"type": "text", "text": "{"}]
    bare = convert({"messages": [*user("hi"), {**prefill, "content": None}]})
    assert [turn["role"] for turn in bare["messages"]] == ["user"]


def test_refused_thinking_blocks_can_be_left_out_with_the_thinking_they_need() -> None:
    signed = {"type": "thinking", "thinking": "hmm", "signature": "c2ln"}
    call = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    loop = [
        *user("hi"),
        {"role": "assistant", "content": None, "tool_calls": [call], "thinking_blocks": [signed]},
        {"role": "tool", "tool_call_id": "t1", "content": "42"},
    ]
    payload = convert({"messages": loop, "thinking": {"type": "enabled", "budget_tokens": 1024}})
    plain = without_thinking_blocks(payload)
    assert plain is not None and "thinking" not in plain and "thinking" in payload
    assert [b["type"] for b in plain["messages"][1]["content"]] == ["tool_use"]
    assert without_thinking_blocks(plain) is None  # nothing left to leave out
    alone = convert({"messages": [*user("hi"), {**loop[1], "tool_calls": None}, *user("go")]})
    assert without_thinking_blocks(alone) is None  # the turn would be empty
    adaptive = convert({"messages": loop, "thinking": {"type": "adaptive"}})
    kept = without_thinking_blocks(adaptive)  # adaptive thinking needs no block
    assert kept is not None and kept["thinking"] == {"type": "adaptive"}


def test_response_becomes_a_chat_completion() -> None:
    data = {
        "id": "msg_1",
        "model": "claude-x-2025",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Checking. "},
            {"type": "text", "text": "One moment."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 5,
            "cache_creation_input_tokens": 1,
            "cache_read_input_tokens": 2,
            "output_tokens": 4,
        },
    }
    completion = to_chat_completion(data)
    assert completion["id"] == "chatcmpl-msg_1"
    assert completion["object"] == "chat.completion"
    assert isinstance(completion["created"], int)
    assert completion["model"] == "claude-x-2025"
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Checking. One moment.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
        "reasoning_content": "hmm",
        "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "s"}],
    }
    assert completion["usage"] == {
        "prompt_tokens": 8,
        "completion_tokens": 4,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 1},
    }


def test_a_tool_only_response_has_null_content() -> None:
    data = {"id": "m", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
    message = to_chat_completion({**data, "stop_reason": "tool_use"})["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_finish_reasons(stop: str | None, finish: str | None) -> None:
    assert finish_reason(stop) == finish


def test_stream_translator_ignores_pings_and_unknown_events() -> None:
    translator = StreamTranslator("anth")
    assert translator.feed(b'event: ping\ndata: {"type": "ping"}\n\n') == []
    assert translator.feed(b": a comment\n\n") == []
    assert translator.feed(b'data: {"type": "brand_new"}\n\n') == []
    assert not translator.done


def test_top_p_goes_only_without_a_temperature_and_below_1() -> None:
    """Claude Sonnet 4.5 and later refuse `temperature` and `top_p` together, which OpenAI
    clients often send; `top_p: 1` cuts nothing."""
    both = convert({"messages": user("hi"), "temperature": 0.7, "top_p": 0.9})
    assert both["temperature"] == 0.7 and "top_p" not in both
    alone = convert({"messages": user("hi"), "top_p": 0.9})
    assert alone["top_p"] == 0.9 and "temperature" not in alone
    assert "top_p" not in convert({"messages": user("hi"), "top_p": 1})


def test_instructions_alone_are_sent_as_the_users_turn() -> None:
    """OpenAI serves a conversation of system messages alone; Anthropic refuses an empty
    `messages`: the instructions become the turn."""
    payload = convert({"messages": [{"role": "system", "content": "Write a haiku."}]})
    assert payload["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Write a haiku."}]}
    ]
    assert "system" not in payload


def test_a_closing_assistant_turn_is_a_prefill_without_trailing_whitespace() -> None:
    """Anthropic refuses a prefill ending in whitespace; one of whitespace alone goes."""
    said = [*user("hi"), {"role": "assistant", "content": "Sure, "}]
    payload = convert({"messages": said})
    assert payload["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Sure,"}],
    }
    blank = convert({"messages": [*user("hi"), {"role": "assistant", "content": "  "}]})
    assert [m["role"] for m in blank["messages"]] == ["user"]
    merged = [*user("hi"), {"role": "assistant", "content": "Sure "}]
    merged.append({"role": "assistant", "content": " "})  # one turn of two texts
    assert convert({"messages": merged})["messages"][-1]["content"] == [
        {"type": "text", "text": "Sure"}
    ]


def test_instructions_of_whitespace_alone_are_refused_before_sending() -> None:
    with pytest.raises(UpstreamRejected, match="no text") as caught:
        convert({"messages": [{"role": "system", "content": "  "}]})
    assert caught.value.param == "messages"


def test_safety_identifier_names_the_end_user_and_a_jpg_is_a_jpeg() -> None:
    payload = convert({"messages": user("hi"), "safety_identifier": "hash-7"})
    assert payload["metadata"] == {"user_id": "hash-7"}
    image = {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,AAA"}}
    sent = convert({"messages": [{"role": "user", "content": [image]}]})
    (block,) = sent["messages"][0]["content"]
    assert block["source"] == {"type": "base64", "media_type": "image/jpeg", "data": "AAA"}
