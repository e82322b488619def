"""Placeholders swapped back in answers: whole completions, tool-call arguments (as JSON
string content) and streams whose placeholders arrive in pieces."""

from __future__ import annotations

import json
from typing import Any

from llmroute.safety.pii import Redactor
from llmroute.safety.restore import StreamRestorer, restore_completion, restore_text

VALUES = {"<EMAIL_1>": "jane@example.com", "<SECRET_1>": 'sk-"quoted"\\x'}


def test_the_issued_placeholders_are_restored_and_made_up_ones_left() -> None:
    text = "Write to <EMAIL_1>, not <EMAIL_2>; <EMAIL_1> again. a < b > c"
    assert restore_text(text, VALUES) == (
        "Write to jane@example.com, not <EMAIL_2>; jane@example.com again. a < b > c"
    )


def test_the_redactor_knows_what_each_placeholder_replaced() -> None:
    redactor = Redactor()
    assert redactor.placeholder("EMAIL", "Jane@Example.com") == "<EMAIL_1>"
    assert redactor.placeholder("EMAIL", "jane@example.com") == "<EMAIL_1>"  # same value
    assert redactor.placeholder("PHONE", "+1 415 555 0100") == "<PHONE_1>"
    assert redactor.originals == {"<EMAIL_1>": "Jane@Example.com", "<PHONE_1>": "+1 415 555 0100"}


def test_a_completions_text_refusal_and_tool_arguments_are_restored() -> None:
    arguments = json.dumps({"to": "<EMAIL_1>", "key": "<SECRET_1>"})
    data: dict[str, Any] = {
        "choices": [
            {
                "message": {
                    "content": "Sent to <EMAIL_1>.",
                    "refusal": None,
                    "tool_calls": [{"function": {"name": "send", "arguments": arguments}}],
                }
            },
            {"message": {"content": None, "refusal": "not <SECRET_1>"}},
        ],
        "usage": {"prompt_tokens": 3},
    }
    restore_completion(data, VALUES)
    first = data["choices"][0]["message"]
    assert first["content"] == "Sent to jane@example.com."
    # a value with quotes and backslashes is escaped inside the JSON arguments
    assert json.loads(first["tool_calls"][0]["function"]["arguments"]) == {
        "to": "jane@example.com",
        "key": 'sk-"quoted"\\x',
    }
    assert data["choices"][1]["message"]["refusal"] == 'not sk-"quoted"\\x'
    assert restore_completion("not a completion", VALUES) == "not a completion"


def test_the_models_reasoning_is_restored_and_its_signed_blocks_left_alone() -> None:
    """The model thought in placeholders too; its ``reasoning_content`` is part of the
    answer the client reads. The thinking blocks go back to Anthropic as they came (a
    changed one fails its signature), so they keep the placeholders."""
    block = {"type": "thinking", "thinking": "mail <EMAIL_1>", "signature": "c2ln"}
    message = {"content": "ok", "reasoning_content": "mail <EMAIL_1>", "thinking_blocks": [block]}
    data: dict[str, Any] = {"choices": [{"message": message}]}
    restore_completion(data, VALUES)
    assert message["reasoning_content"] == "mail jane@example.com"
    assert message["thinking_blocks"] == [{**block, "thinking": "mail <EMAIL_1>"}]
    pieces = [_chunk(reasoning_content="mail <EMA"), _chunk(reasoning_content="IL_1>")]
    chunks = _run([*pieces, _chunk("ok", finish="stop"), b"data: [DONE]\n\n"])
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks)
    assert reasoning == "mail jane@example.com"


def _chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> bytes:
    if content is not None:
        delta["content"] = content
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _run(pieces: list[bytes]) -> list[dict[str, Any]]:
    restorer = StreamRestorer(VALUES)
    out = b"".join(b"".join(restorer.feed(p)) for p in pieces) + b"".join(restorer.close())
    events = [e for e in out.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]" or pieces[-1] != b"data: [DONE]\n\n"
    return [json.loads(e[5:]) for e in events if e != b"data: [DONE]"]


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_a_placeholder_split_across_chunks_is_held_then_restored() -> None:
    pieces = [_chunk("Mail <EM"), _chunk("AIL_"), _chunk("1> today"), _chunk(finish="stop")]
    chunks = _run([*pieces, b"data: [DONE]\n\n"])
    assert _text(chunks) == "Mail jane@example.com today"
    assert chunks[0]["choices"][0]["delta"]["content"] == "Mail "  # "<EM" held back
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_what_only_looked_like_a_placeholder_goes_out_with_the_finish() -> None:
    chunks = _run([_chunk("x < y and <A"), _chunk("", finish="stop"), b"data: [DONE]\n\n"])
    assert _text(chunks) == "x < y and <A"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_stream_that_ends_on_a_held_piece_sends_it_before_done() -> None:
    chunks = _run([_chunk("to <EMAIL_1"), b"data: [DONE]\n\n"])
    assert _text(chunks) == "to <EMAIL_1"
    chunks = _run([_chunk("to <EMAIL_1")])  # no [DONE]: `close` sends it
    assert _text(chunks) == "to <EMAIL_1"


def test_events_split_anywhere_and_tool_arguments_in_pieces() -> None:
    call = {"index": 0, "id": "t", "function": {"name": "send", "arguments": '{"to": "<EMA'}}
    rest = {"index": 0, "function": {"arguments": 'IL_1>"}'}}
    raw = _chunk(tool_calls=[call]) + _chunk(tool_calls=[rest]) + _chunk(finish="tool_calls")
    raw += b"data: [DONE]\n\n"
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]  # cut mid-event, mid-line
    chunks = _run(pieces)
    arguments = "".join(
        tc["function"].get("arguments", "")
        for c in chunks
        for tc in c["choices"][0]["delta"].get("tool_calls", [])
    )
    assert json.loads(arguments) == {"to": "jane@example.com"}


def test_unreadable_events_pass_through() -> None:
    restorer = StreamRestorer(VALUES)
    odd = b": keep-alive\n\ndata: not json\n\nevent: x\ndata: [1, 2]\n\n"
    assert b"".join(restorer.feed(odd)) == odd
