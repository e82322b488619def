"""The completions API's requests made raw for models that continue text, and their
answers read back as chat: `llmroute.dispatch.text_completions`."""

from __future__ import annotations

import functools
import json

from llmroute.dispatch.model_params import for_model
from llmroute.dispatch.text_completions import (
    CHAT_ONLY,
    TextRequest,
    chat_answer,
    chat_content,
    chat_event,
    text_body,
    text_logprobs,
)
from llmroute.dispatch.usage import prompt_tokens_at_most
from llmroute.registry.schema import Model
from llmroute.sse import event_of

_FIM = "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"


def _chat(prompt: str, suffix: str | None = None, **params: object) -> dict[str, object]:
    content = chat_content(prompt, suffix)
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **params}


def test_only_fields_set_to_something_ask_for_a_raw_model() -> None:
    assert TextRequest.of({"suffix": "", "echo": False, "logprobs": None}).raw_only is None
    text = TextRequest.of({"logprobs": 0, "echo": True, "suffix": "}", "n": 2})
    assert text.fim and text.fields == (("echo", True), ("logprobs", 0))
    assert text.raw_only == "suffix"
    assert TextRequest.of({"logprobs": 0}).raw_only == "logprobs"


def test_the_raw_body_is_the_chat_body_as_the_model_gets_it_less_the_chat() -> None:
    sent = _chat(
        "call <EMAIL_1> about",  # as redaction left it
        max_tokens=16,
        n=2,
        stop=["\n"],
        stream=True,
        stream_options={"include_usage": True},
        tools=[{"type": "function", "function": {"name": "f"}}],
        reasoning_effort="low",
        chat_template_kwargs={"enable_thinking": False},
        logprobs=True,
        top_logprobs=2,
    )
    raw = text_body(sent, TextRequest.of({"logprobs": 3}))
    assert raw == {
        "model": "auto",
        "prompt": "call <EMAIL_1> about",
        "max_tokens": 16,
        "n": 2,
        "stop": ["\n"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": 3,
    }
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}
    assert text_body(parts, TextRequest())["prompt"] == "a"
    assert text_body({"messages": "odd"}, TextRequest())["prompt"] == ""
    assert "logprobs" not in text_body(sent, TextRequest.of({"logprobs": 3}), logprobs=False)


def test_a_suffix_rides_in_the_message_and_goes_out_as_a_field_or_in_the_template() -> None:
    text = TextRequest.of({"suffix": "    return c"})
    sent = _chat("def f(a <EMAIL_1>):", "    return <EMAIL_2>")  # both parts redacted
    raw = text_body(sent, text)
    assert (raw["prompt"], raw["suffix"]) == ("def f(a <EMAIL_1>):", "    return <EMAIL_2>")
    templated = text_body(sent, text, fim_template=_FIM)
    assert "suffix" not in templated
    assert templated["prompt"] == (
        "<|fim_prefix|>def f(a <EMAIL_1>):<|fim_suffix|>    return <EMAIL_2><|fim_middle|>"
    )
    braces = text_body(_chat("x = {", "}"), text, fim_template=_FIM)["prompt"]
    assert braces == "<|fim_prefix|>x = {<|fim_suffix|>}<|fim_middle|>"
    # without a suffix the template is not used
    assert text_body(_chat("x"), TextRequest(), fim_template=_FIM)["prompt"] == "x"


def test_the_models_params_renames_and_drops_shape_the_raw_body() -> None:
    model = Model(
        model="m",
        provider="p",
        params={"temperature": 0.2, "chat_template_kwargs": {"enable_thinking": False}},
        rename_params={"seed": "random_seed"},
        drop_params=("echo",),
    )
    shape = functools.partial(for_model, model=model, route_params={"top_p": 0.9})
    raw = text_body(_chat("x", seed=3), TextRequest.of({"echo": True}), shape=shape)
    assert raw == {
        "model": "auto",
        "prompt": "x",
        "random_seed": 3,
        "top_p": 0.9,
        "temperature": 0.2,
    }


def test_a_raw_body_keeps_max_tokens_and_asks_no_logprobs_when_told() -> None:
    """A rename into a chat-only name (the model's chat API wants
    ``max_completion_tokens``) is not made on a raw body, which would lose the cap; with
    ``logprobs=False`` none are asked for, even when the model's params set some."""
    model = Model(
        model="m",
        provider="p",
        params={"logprobs": True},
        rename_params={"max_tokens": "max_completion_tokens"},
    )
    shape = functools.partial(for_model, model=model, not_renamed_to=CHAT_ONLY)
    text = TextRequest.of({"logprobs": 2})
    raw = text_body(_chat("x", max_tokens=9), text, shape=shape, logprobs=False)
    assert raw == {"model": "auto", "prompt": "x", "max_tokens": 9}
    assert text_body(_chat("x"), text, shape=shape)["logprobs"] == 2


def test_a_raw_body_bounds_its_prompt_with_the_suffix() -> None:
    alone = prompt_tokens_at_most({"prompt": "x" * 400})
    assert alone >= 200
    assert prompt_tokens_at_most({"prompt": "x" * 400, "suffix": "y" * 400}) >= 2 * alone - 2
    chat = prompt_tokens_at_most(_chat("x" * 400, "y" * 400))
    assert chat >= 2 * alone - 2  # the chat body counts the suffix part too
    stray = {"messages": [{"role": "user", "content": "hi"}], "prompt": "z" * 400}
    assert prompt_tokens_at_most(stray) < 50  # a chat body's own "prompt" is not a prompt


def test_a_text_completion_reads_as_a_chat_completion() -> None:
    logprobs = {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": None}
    data = {
        "id": "cmpl-7",
        "object": "text_completion",
        "created": 3,
        "model": "up",
        "choices": [
            {"index": 0, "text": "a", "logprobs": logprobs, "finish_reason": "length"},
            {"text": None, "finish_reason": "stop", "logprobs": {"content": []}},
            "junk",
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
    chat = chat_answer(data)
    assert chat["id"] == "chatcmpl-7" and chat["object"] == "chat.completion"
    assert chat["created"] == 3 and chat["usage"] == data["usage"]
    assert chat["choices"] == [
        {
            "index": 0,
            "message": {"content": "a", "role": "assistant"},
            "finish_reason": "length",
            "logprobs": logprobs,
        },
        {"index": 1, "message": {"content": "", "role": "assistant"}, "finish_reason": "stop"},
    ]
    assert chat_answer({"choices": "none"})["choices"] == []
    assert text_logprobs({"content": [{"token": "a"}]}) is None  # a chat model's


def test_a_text_completion_event_reads_as_a_chat_chunk() -> None:
    chunk = {
        "id": "cmpl-7",
        "object": "text_completion",
        "model": "up",
        "choices": [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": None}],
    }
    read = json.loads(chat_event(event_of(chunk))[6:])
    assert read["object"] == "chat.completion.chunk" and read["id"] == "chatcmpl-7"
    assert read["choices"] == [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]
    usage = {"id": "cmpl-7", "choices": [], "usage": {"prompt_tokens": 1}}
    assert json.loads(chat_event(event_of(usage))[6:])["usage"] == {"prompt_tokens": 1}
    for same in (b"data: [DONE]\n\n", b"data: {not json\n\n", event_of({"error": {"m": 1}})):
        assert chat_event(same) == same
