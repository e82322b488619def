"""Whatever a client sends, the Messages, Responses and completions converters answer with a chat
body or a 400 naming a field (`GatewayError`), and what the gateway does with a chat
body itself ends in a body or an `LlmrouteError`: never another exception, which the
gateway would turn into a 500. Bodies are random JSON built from each API's own keys
and values, so most of them get deep into the conversion before they fail."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from llmroute.dispatch.client_reasoning import in_dialect
from llmroute.dispatch.text_completions import TextRequest, chat_answer, chat_event, text_body
from llmroute.dispatch.usage import estimated_prompt_tokens, prompt_tokens
from llmroute.errors import LlmrouteError, ProviderError, UpstreamRejected
from llmroute.providers._anthropic_convert import to_chat_completion, to_messages_request
from llmroute.providers.anthropic import StreamTranslator as AnthropicStream
from llmroute.providers.cache_markers import without_cache_markers
from llmroute.registry.schema import Model, Reasoning
from llmroute.server import completions, messages_convert, responses_convert
from llmroute.server.completions import CompletionStream
from llmroute.server.errors import GatewayError
from llmroute.server.messages_convert import StreamTranslator
from llmroute.server.responses_stream import ResponsesStream

THINKER = Model(provider="p", model="m", reasoning=Reasoning())

_KEYS = [
    "model", "input", "instructions", "messages", "role", "content", "type", "text",
    "tools", "tool_choice", "name", "call_id", "arguments", "output", "input_schema",
    "parameters", "max_tokens", "max_output_tokens", "thinking", "budget_tokens",
    "cache_control", "source", "media_type", "data", "url", "image_url", "tool_use_id",
    "is_error", "system", "stop_sequences", "format", "schema", "reasoning", "effort",
    "id", "stream", "metadata", "user_id", "previous_response_id", "prompt", "suffix",
    "echo", "logprobs", "best_of", "n", "stream_options", "include_usage",
]  # fmt: skip
_WORDS = [
    "auto", "user", "assistant", "system", "developer", "tool", "text", "image",
    "tool_use", "tool_result", "thinking", "enabled", "disabled", "message",
    "function_call", "function_call_output", "custom", "custom_tool_call", "input_text",
    "input_image", "output_text", "function", "json_schema", "json_object", "base64",
    "url", "ephemeral", "reasoning", "any", "none", "required", "",
]  # fmt: skip

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5000),
    st.sampled_from(_WORDS),
    st.text(max_size=8),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=6),
    ),
    max_leaves=30,
)
_short = st.one_of(st.text(max_size=6), _scalars)
_part = st.fixed_dictionaries(
    {"type": st.sampled_from(_WORDS)},
    optional={
        "text": _short,
        "cache_control": st.one_of(st.just({"type": "ephemeral"}), _json),
        "source": st.one_of(
            st.just({"type": "base64", "media_type": "image/png", "data": "AA"}), _json
        ),
        "image_url": _short,
        "tool_use_id": _short,
        "content": st.one_of(_short, st.lists(_json, max_size=2)),
        "id": _short,
        "name": _short,
        "input": _json,
        "is_error": _scalars,
    },
)
_item = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "x"])},
    optional={
        "content": st.one_of(_short, st.lists(_part, max_size=3)),
        "type": st.sampled_from(_WORDS),
        "call_id": _short,
        "name": _short,
        "arguments": st.one_of(st.just("{}"), _short),
        "output": st.one_of(_short, st.lists(_part, max_size=2)),
        "input": _short,
        "cache_control": _json,
    },
)
_OTHER_KEYS = [k for k in _KEYS if k not in ("model", "max_tokens", "messages", "input")]
# A valid model and max_tokens and a list of message-like items, so that bodies get
# past the first checks and into the conversion of every part.
_bodies = st.builds(
    lambda extra, items: {"model": "auto", "max_tokens": 4000, "messages": items,
                          "input": items, **extra},
    st.dictionaries(st.sampled_from(_OTHER_KEYS), _json, max_size=4),
    st.lists(_item, min_size=1, max_size=4),
)  # fmt: skip


def _converts_or_400(convert: Any, body: dict[str, Any]) -> None:
    try:
        out = convert(body)
    except GatewayError as exc:
        assert exc.status == 400 and exc.message
        return
    assert isinstance(out, dict) and isinstance(out["messages"], list)
    # ... and what it converted goes on without a crash: to an OpenAI-protocol server
    # (markers removed), to Anthropic (converted again, or refused with a 400), and
    # with thinking said in each dialect
    without_cache_markers(out)
    try:
        to_messages_request("claude", "claude-x", out)
    except UpstreamRejected as exc:
        assert exc.status == 400
    for kind in ("openai", "anthropic"):
        in_dialect(out, THINKER, kind)


@settings(max_examples=100, deadline=None)
@given(_bodies)
def test_any_messages_body_converts_or_is_a_400(body: dict[str, Any]) -> None:
    """Any Messages body converts to a chat body or is a 400 naming a field.
    Fewer examples than the upstream-side tests below: ``benchmarks/fuzz_gateway.py``
    sends this endpoint's bodies, mutated, through a real gateway 1,500 times a round
    (docs/benchmarks.md); this is the quick check of the same space in every run."""
    _converts_or_400(messages_convert.to_chat_body, body)


@settings(max_examples=100, deadline=None)
@given(_bodies)
def test_any_responses_body_converts_or_is_a_400(body: dict[str, Any]) -> None:
    """Any Responses body converts to a chat body or is a 400 naming a field.
    Fewer examples than the upstream-side tests below: ``benchmarks/fuzz_gateway.py``
    sends this endpoint's bodies, mutated, through a real gateway 1,500 times a round
    (docs/benchmarks.md); this is the quick check of the same space in every run."""
    _converts_or_400(responses_convert.to_chat_body, body)


_completion_bodies = st.builds(
    lambda extra, prompt: {"model": "auto", "prompt": prompt, **extra},
    st.dictionaries(st.sampled_from(_KEYS), _json, max_size=5),
    st.one_of(_short, st.lists(_short, max_size=2)),
)


@settings(max_examples=100, deadline=None)
@given(_completion_bodies)
@example({"model": "auto", "prompt": ["hi"], "n": 2, "best_of": 2, "stream": True})
def test_any_completions_body_converts_or_is_a_400(body: dict[str, Any]) -> None:
    """Any text completions body converts to a chat body or is a 400 naming a field.
    Fewer examples than the upstream-side tests below: ``benchmarks/fuzz_gateway.py``
    sends this endpoint's bodies, mutated, through a real gateway 1,500 times a round
    (docs/benchmarks.md); this is the quick check of the same space in every run."""
    _converts_or_400(completions.to_chat_body, body)


@settings(max_examples=300, deadline=None)
@given(_completion_bodies, st.booleans())
@example({"model": "auto", "prompt": "x", "suffix": "y", "echo": True, "logprobs": 2}, True)
def test_an_accepted_completion_makes_a_raw_body(body: dict[str, Any], fim: bool) -> None:
    """Whatever completion the front accepted makes the raw body of a model continuing
    text, its suffix given back (as the field, or in a template)."""
    try:
        chat = completions.to_chat_body(body)
    except GatewayError:
        return
    text = TextRequest.of(body)
    template = "<PRE>{prefix}<SUF>{suffix}<MID>" if fim else None
    raw = text_body(chat, text, fim_template=template)
    assert isinstance(raw["prompt"], str) and "messages" not in raw
    if text.fim:
        assert (body["suffix"] in raw["prompt"]) if fim else raw["suffix"] == body["suffix"]


@settings(max_examples=400, deadline=None)
@given(_bodies)
@example({"model": "auto", "input": "hi"})
@example(
    {
        "model": "auto",
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
            {"role": "assistant", "content": "x"},
            {"type": "function_call", "call_id": "c", "name": "f"},
            {"type": "custom_tool_call", "call_id": "d", "name": "g", "input": "*"},
            {"type": "function_call_output", "call_id": "c", "output": "y"},
            {
                "type": "custom_tool_call_output",
                "call_id": "d",
                "output": [{"type": "input_text", "text": "z"}],
            },
            {"type": "reasoning", "summary": []},
        ],
    }
)
def test_an_accepted_responses_input_can_be_continued(body: dict[str, Any]) -> None:
    """Whatever input was accepted (and so kept, with stored responses) converts again
    as the earlier turns of a continuation: a kept conversation never turns into a 400
    on its next turn."""
    try:
        responses_convert.to_chat_body(body, [])
    except GatewayError:
        return
    kept = responses_convert.input_items(body)
    assert all(isinstance(item, dict) for item in kept)
    later = responses_convert.to_chat_body({"model": "auto", "input": "and then?"}, kept)
    assert later["messages"][-1] == {"role": "user", "content": "and then?"}


_CHUNK_KEYS = ["id", "choices", "delta", "content", "tool_calls", "index", "function",
               "name", "arguments", "finish_reason", "usage", "prompt_tokens",
               "completion_tokens", "error", "message", "created"]  # fmt: skip
_chunk_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(_CHUNK_KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(_CHUNK_KEYS), _chunk_json, max_size=4)))
def test_any_upstream_chunks_translate_without_a_crash(chunks: list[dict[str, Any]]) -> None:
    """An upstream's stream is not ours to trust: odd chunks are skipped or carried,
    never an exception in the middle of a client's stream."""
    body = {"model": "auto", "input": "x", "tools": [{"type": "custom", "name": "p"}]}
    wants_usage = {"stream_options": {"include_usage": True}}
    translators = (
        StreamTranslator("small"),
        ResponsesStream("small", body),
        CompletionStream("small", wants_usage),
    )
    for translator in translators:
        for chunk in chunks:
            list(translator.feed(f"data: {json.dumps(chunk)}\n\n".encode()))
        list(translator.close())


_TEXT_KEYS = ["id", "object", "choices", "text", "index", "logprobs", "tokens",
              "token_logprobs", "top_logprobs", "text_offset", "finish_reason", "usage",
              "prompt_tokens", "completion_tokens", "error", "created"]  # fmt: skip
_text_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(_TEXT_KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(_TEXT_KEYS), _text_json, max_size=5)))
def test_any_raw_text_answer_or_stream_converts_without_a_crash(
    chunks: list[dict[str, Any]],
) -> None:
    """A raw text model's answers, read as chat (`chat_answer`, `chat_event`) and
    written back as completions, whatever they hold."""
    translator = CompletionStream("small", {"stream_options": {"include_usage": True}})
    for chunk in chunks:
        event = chat_event(f"data: {json.dumps(chunk)}\n\n".encode())
        list(translator.feed(event))
        answer = completions.to_completion(chat_answer(chunk), "small", {})
        assert answer["object"] == "text_completion"
    list(translator.close())


_ANSWER_KEYS = [*_CHUNK_KEYS, "message", "tool_calls", "role", "prompt_tokens_details"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_ANSWER_KEYS), _chunk_json, max_size=5))
def test_any_upstream_answer_converts_without_a_crash(data: dict[str, Any]) -> None:
    body = {"model": "auto", "input": "x", "tools": [{"type": "custom", "name": "p"}]}
    assert messages_convert.to_message(data, "small")["type"] == "message"
    assert responses_convert.to_response(data, "small", body)["object"] == "response"
    assert completions.to_completion(data, "small", {})["object"] == "text_completion"


_ANTHROPIC_KEYS = ["type", "message", "index", "content_block", "delta", "text", "id",
                   "name", "input", "partial_json", "usage", "input_tokens",
                   "output_tokens", "stop_reason", "content", "model", "error",
                   "cache_read_input_tokens", "thinking"]  # fmt: skip
_ANTHROPIC_WORDS = ["message_start", "content_block_start", "content_block_delta",
                    "message_delta", "message_stop", "text", "tool_use", "text_delta",
                    "input_json_delta", "thinking", "end_turn", "tool_use", "error"]  # fmt: skip
_anthropic_json = st.recursive(
    st.one_of(_scalars, st.sampled_from(_ANTHROPIC_WORDS)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(_ANTHROPIC_KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)
_anthropic_events = st.dictionaries(
    st.sampled_from(_ANTHROPIC_KEYS), _anthropic_json, max_size=5
).map(lambda d: d if "type" in d else {**d, "type": "content_block_delta"})


@settings(max_examples=300, deadline=None)
@given(st.lists(_anthropic_events, max_size=6))
def test_any_anthropic_answer_or_stream_converts_or_is_an_upstream_error(
    events: list[dict[str, Any]],
) -> None:
    """What an Anthropic upstream sends is not ours to trust either: a provider error
    (which dispatch turns into a fallback or a 502) at worst, never a crash."""
    for data in events:
        with contextlib.suppress(ProviderError):
            to_chat_completion(data)
    translator = AnthropicStream("claude", include_usage=True)
    try:
        for data in events:
            translator.feed(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
    except ProviderError:
        pass


_CHAT_KEYS = [
    "role", "content", "type", "text", "image_url", "url", "detail", "tool_calls", "id",
    "function", "name", "arguments", "tool_call_id", "parameters", "description",
    "json_schema", "schema", "strict", "input_audio", "file", "file_data", "refusal",
    "cache_control", "reasoning_effort", "thinking", "budget_tokens",
]  # fmt: skip
_CHAT_WORDS = [
    "user", "assistant", "system", "developer", "tool", "function", "text", "image_url",
    "input_audio", "file", "auto", "none", "required", "json_object", "json_schema",
    "data:image/png;base64,AA", "https://x/y.png", "{}", "{\"a\": 1}", "low", "high", "",
]  # fmt: skip
_chat_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=5000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(_CHAT_WORDS),
    st.text(max_size=6),
)
_chat_json = st.recursive(
    _chat_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_CHAT_KEYS), inner, max_size=5)
    ),
    max_leaves=25,
)
_chat_call = st.fixed_dictionaries(
    {},
    optional={
        "id": _chat_scalars,
        "type": st.sampled_from(["function", "custom", "x"]),
        "function": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={"name": _chat_scalars, "arguments": st.one_of(_chat_scalars, _chat_json)},
            ),
            _chat_json,
        ),
    },
)
_chat_part = st.one_of(
    _chat_json,
    st.fixed_dictionaries(
        {"type": st.sampled_from(_CHAT_WORDS)},
        optional={
            "text": _chat_scalars,
            "image_url": st.one_of(_chat_json, st.fixed_dictionaries({"url": _chat_scalars})),
            "cache_control": _chat_json,
        },
    ),
)
_chat_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(
            ["user", "assistant", "system", "developer", "tool", "function", "x"]
        )
    },
    optional={
        "content": st.one_of(_chat_scalars, st.lists(_chat_part, max_size=3)),
        "tool_calls": st.one_of(_chat_json, st.lists(_chat_call, max_size=2)),
        "tool_call_id": _chat_scalars,
        "name": _chat_scalars,
        "cache_control": _chat_json,
    },
)
_chat_tool = st.one_of(
    _chat_json,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "x"])},
        optional={
            "function": st.one_of(
                _chat_json,
                st.fixed_dictionaries(
                    {"name": _chat_scalars},
                    optional={"parameters": _chat_json, "description": _chat_scalars},
                ),
            )
        },
    ),
)
_CHAT_TOP = {
    "tools": st.one_of(_chat_json, st.lists(_chat_tool, max_size=2)),
    "tool_choice": st.one_of(
        _chat_json, st.fixed_dictionaries({"type": st.just("function"), "function": _chat_json})
    ),
    "response_format": st.one_of(
        _chat_json,
        st.fixed_dictionaries(
            {"type": st.sampled_from(_CHAT_WORDS)}, optional={"json_schema": _chat_json}
        ),
    ),
    "stop": _chat_json,
    "n": _chat_scalars,
    "logprobs": _chat_scalars,
    "audio": _chat_json,
    "temperature": _chat_scalars,
    "top_p": _chat_scalars,
    "max_tokens": _chat_scalars,
    "max_completion_tokens": _chat_scalars,
    "parallel_tool_calls": _chat_scalars,
    "user": _chat_scalars,
    "reasoning_effort": _chat_scalars,
    "thinking": _chat_json,
    "metadata": _chat_json,
    "stream_options": _chat_json,
    "seed": _chat_scalars,
}
_chat_bodies = st.builds(
    lambda messages, extra: {"model": "claude", "messages": messages, **extra},
    st.lists(_chat_message, min_size=1, max_size=4),
    st.fixed_dictionaries({}, optional=_CHAT_TOP),
)


@settings(max_examples=100, deadline=None)
@given(_chat_bodies)
@example({"model": "claude", "messages": [{"role": "user"}], "tools": True})
@example({"model": "c", "messages": [{"role": "assistant", "content": None, "tool_calls": 1}]})
def test_any_chat_body_is_handled_or_refused(body: dict[str, Any]) -> None:
    """What the gateway itself does with a client's chat body (counting its prompt,
    removing cache markers for an OpenAI-protocol server, saying thinking in a model's
    dialect, converting it for an Anthropic model) ends in a body or an `LlmrouteError`
    (the gateway's error JSON), never another exception: a 500. The two examples were
    500s found by a longer run of this test and of the gateway's own fuzz test, which
    sends chat bodies, mutated, to OpenAI-protocol and Anthropic models 1,500 times a
    round (``benchmarks/fuzz_gateway.py``, docs/benchmarks.md): hence fewer examples
    here than the upstream-side tests above, as the quick check in every run."""
    for kind in ("openai", "anthropic"):  # a client's thinking said in each dialect
        with contextlib.suppress(LlmrouteError):  # rendered as the gateway's error JSON
            in_dialect(body, THINKER, kind)
    without_cache_markers(json.loads(json.dumps(body)))  # for an OpenAI-protocol server
    assert estimated_prompt_tokens(body) >= 0 and prompt_tokens(body) >= 0  # tpm holds, usage
    try:
        out = to_messages_request("claude", "claude-x", body)
    except UpstreamRejected as exc:
        assert exc.status == 400
        return
    assert isinstance(out["messages"], list)
    json.dumps(out)
