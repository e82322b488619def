"""The chat → text-completion conversion alone: an OpenAI model's refusal."""

from __future__ import annotations

import json
from typing import Any

from llmroute.server.completions import CompletionStream, to_completion


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(data)}\n\n".encode()


def test_a_refusal_is_the_completions_text_finished_by_the_content_filter() -> None:
    """It came back as `text: ""` finished `stop`, a normal-looking empty answer."""
    refused = {"content": None, "refusal": "I cannot help with that."}
    data = {"id": "x", "choices": [{"finish_reason": "stop", "message": refused}]}
    (choice,) = to_completion(data, "m", {})["choices"]
    assert choice["text"] == "I cannot help with that."
    assert choice["finish_reason"] == "content_filter"
    answered = {"id": "x", "choices": [{"finish_reason": "stop", "message": {"content": "ok"}}]}
    assert to_completion(answered, "m", {})["choices"][0]["finish_reason"] == "stop"
    stream = CompletionStream("m", {})
    raw = [
        *stream.feed(_chunk({"role": "assistant", "refusal": ""})),
        *stream.feed(_chunk({"refusal": "I cannot "})),
        *stream.feed(_chunk({"refusal": "help."}, finish="stop")),
        *stream.feed(b"data: [DONE]\n\n"),
    ]
    events = [json.loads(e[6:]) for e in raw if e.startswith(b"data: {")]
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == "I cannot help."
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == (
        "content_filter"
    )
