"""PII in answers redacted by type (a profile's ``answer_pii``): whole completions and
streams whose spans arrive in pieces; the registry refuses what cannot work."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmroute.errors import ConfigError
from llmroute.registry import parse_registry
from llmroute.registry.schema import SafetyProfile
from llmroute.safety.answer_pii import HOLD, AnswerMask
from llmroute.safety.pii import PiiDetector

DETECTOR = PiiDetector(["EMAIL", "PHONE", "CARD"])
MASK = AnswerMask(DETECTOR, SafetyProfile(answer_pii={"EMAIL": "redact", "CARD": "redact"}))
ANSWER = "Write to alice@corp.example or call +1 415 555 0100; card 4111 1111 1111 1111."
MASKED = "Write to <EMAIL> or call +1 415 555 0100; card <CARD>."


def test_the_profiles_types_are_redacted_and_the_rest_left() -> None:
    assert MASK.text(ANSWER) == MASKED
    everything = AnswerMask(DETECTOR, SafetyProfile(answer_pii="redact"))
    assert "<PHONE>" in everything.text(ANSWER)
    assert MASK.text("nothing here") == "nothing here"


def test_a_completions_text_and_refusal_are_redacted_not_its_tool_arguments() -> None:
    arguments = json.dumps({"to": "alice@corp.example"})
    data: dict[str, Any] = {
        "choices": [
            {
                "message": {
                    "content": ANSWER,
                    "refusal": "not to alice@corp.example",
                    "tool_calls": [{"function": {"name": "send", "arguments": arguments}}],
                }
            }
        ]
    }
    MASK.completion(data)
    message = data["choices"][0]["message"]
    assert message["content"] == MASKED and message["refusal"] == "not to <EMAIL>"
    assert message["tool_calls"][0]["function"]["arguments"] == arguments


def test_thinking_is_redacted_and_signed_blocks_that_would_leak_are_left_out() -> None:
    """A redacted thinking block would no longer match its signature: the blocks go,
    the reasoning text stays, redacted."""
    block = {"type": "thinking", "thinking": ANSWER, "signature": "c2ln"}
    data: dict[str, Any] = {
        "choices": [
            {"message": {"content": "ok", "reasoning_content": ANSWER, "thinking_blocks": [block]}}
        ]
    }
    MASK.completion(data)
    assert data["choices"][0]["message"] == {"content": "ok", "reasoning_content": MASKED}
    edit = MASK.stream()
    delta = {"reasoning_content": ANSWER, "thinking_blocks": [{**block, "signature": None}]}
    first = {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    raw = b"data: " + json.dumps(first).encode() + b"\n\n" + _chunk(finish="stop")
    out = b"".join(edit.feed(raw)) + b"".join(edit.close())
    assert b"thinking_blocks" not in out and b"alice@" not in out
    deltas = [json.loads(e[5:])["choices"][0]["delta"] for e in out.split(b"\n\n") if e]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == MASKED


def _chunk(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + json.dumps({"id": "c", "choices": [choice]}).encode() + b"\n\n"


def _stream(pieces: list[str]) -> list[str]:
    """The content of each chunk the client gets, for `pieces` then a finish."""
    edit = MASK.stream()
    raw = b"".join(_chunk(p) for p in pieces) + _chunk(finish="stop") + b"data: [DONE]\n\n"
    out = b"".join(edit.feed(raw)) + b"".join(edit.close())
    events = [e for e in out.split(b"\n\n") if e and e != b"data: [DONE]"]
    return [json.loads(e[5:])["choices"][0]["delta"].get("content", "") for e in events]


def test_a_streams_reasoning_reaches_the_client_before_its_answer() -> None:
    """The reasoning held back (its last `HOLD` characters) goes out as the answer
    starts, before its first words: not with the finish reason, after the whole answer,
    where a client that shows the thinking above the answer would put it last."""
    edit = MASK.stream()
    pieces = [{"reasoning_content": p} for p in ("Hmm, ", "mail alice@corp.example.")]
    pieces += [{"content": "Done: "}, {"content": "I wrote. " * 40}]
    choices = [{"index": 0, "delta": d, "finish_reason": None} for d in pieces]
    choices.append({"index": 0, "delta": {}, "finish_reason": "stop"})
    raw = b"".join(
        b"data: " + json.dumps({"id": "c", "choices": [c]}).encode() + b"\n\n" for c in choices
    )
    out = b"".join(edit.feed(raw)) + b"".join(edit.close())
    said = [
        (field, text)
        for event in out.split(b"\n\n")
        if event
        for field, text in json.loads(event[5:])["choices"][0]["delta"].items()
        if text
    ]
    fields = [field for field, _ in said]
    assert fields.index("content") > max(i for i, f in enumerate(fields) if f != "content")
    assert "".join(t for f, t in said if f == "reasoning_content") == "Hmm, mail <EMAIL>."


def test_a_span_split_between_chunks_is_redacted_whole() -> None:
    assert "".join(_stream([ANSWER[:14], ANSWER[14:20], ANSWER[20:]])) == MASKED  # "ali|ce@"
    assert "".join(_stream(list(ANSWER))) == MASKED  # one character a chunk


def test_a_long_answer_flows_before_its_end_held_back_at_most_hold() -> None:
    filler = "lorem ipsum dolor sit amet " * 40  # about 1,080 characters
    pieces = [filler[i : i + 20] for i in range(0, len(filler), 20)] + [ANSWER]
    sent = _stream(pieces)
    assert "".join(sent) == filler + MASKED
    before_finish = "".join(sent[:-1])
    assert len(before_finish) >= len(filler) + len(ANSWER) - HOLD - len("alice@corp.example")


REGISTRY = """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: http://127.0.0.1:9/v1}
models:
  small: {provider: local, model: small}
routes:
  - {name: chat, examples: [hello there, tell me a joke], target: small}
default: {target: small}
safety:
  pii: {enabled: %(pii)s}
  profiles:
    standard: %(profile)s
"""


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("{answer_pii: block}", "Input should be 'allow' or 'redact'"),
        ("{answer_pii: {EMIAL: redact}}", "unknown PII type 'EMIAL'"),
    ],
)
def test_the_registry_refuses_what_answers_cannot_take(profile: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_registry(REGISTRY % {"pii": "true", "profile": profile}, source="reg.yaml")
    assert message in str(caught.value)
    assert "reg.yaml:13: safety.profiles.standard.answer_pii" in str(caught.value)


def test_redacting_answers_needs_the_pii_detector() -> None:
    text = REGISTRY % {"pii": "false", "profile": "{answer_pii: redact}"}
    with pytest.raises(ConfigError, match="needs the PII detector"):
        parse_registry(text, source="reg.yaml")
    parse_registry(REGISTRY % {"pii": "false", "profile": "{answer_pii: allow}"})
