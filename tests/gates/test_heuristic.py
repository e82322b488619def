"""The heuristic gate: refusals and hedging, empty and truncated answers, JSON mode and
JSON schemas, length bounds — and answers that pass."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmroute.gates.base import TierAnswer
from llmroute.gates.heuristic import HeuristicGate, schema_problem
from llmroute.registry.schema import Gate

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "kind": {"enum": ["a", "b"]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def answer(text: str, finish: str = "stop", **message: Any) -> TierAnswer:
    data = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, **message},
                "finish_reason": finish,
            }
        ]
    }
    return TierAnswer.of(data, "small")


def problem(text: str, gate: Gate | None = None, finish: str = "stop", **request: Any) -> Any:
    verdict = asyncio.run(HeuristicGate(gate).check(request, answer(text, finish)))
    assert verdict.gate == "heuristic" and verdict.accept == (verdict.reason == "ok")
    return None if verdict.accept else verdict.reason


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I can’t help with that request.",  # a curly apostrophe
        "As an AI language model, I have no opinions.",
        "I am unable to browse the web.",
    ],
)
def test_refusals_escalate(text: str) -> None:
    assert problem(text) == "refusal"


@pytest.mark.parametrize("text", ["I don't know.", "Hmm, I'm not sure what you mean."])
def test_hedging_escalates(text: str) -> None:
    assert problem(text) == "hedging"


def test_a_refusal_phrase_deep_in_a_long_answer_passes() -> None:
    text = "Paris is the capital of France. " * 10 + "I don't know the rest."
    assert problem(text) is None


def test_refusal_checks_can_be_switched_off() -> None:
    assert problem("I don't know.", Gate(refusal=False)) is None


def test_empty_and_truncated_answers_escalate() -> None:
    assert problem("   ") == "empty"
    assert problem("A long story that stops in the mid", finish="length") == "truncated"
    assert problem("cut", Gate(truncated=False), finish="length") is None


def test_tool_calls_are_not_empty() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    data = {"choices": [{"message": {"content": None, "tool_calls": calls}}]}
    verdict = asyncio.run(HeuristicGate().check({}, TierAnswer.of(data, "small")))
    assert verdict.accept


def test_length_bounds() -> None:
    assert problem("short", Gate(min_chars=10)) == "too_short"
    assert problem("x" * 101, Gate(max_chars=100)) == "too_long"
    assert problem("x" * 100, Gate(min_chars=10, max_chars=100)) is None


def test_json_mode_needs_one_json_object() -> None:
    mode = {"type": "json_object"}
    assert problem("{bad", response_format=mode) == "json"
    assert problem("[1, 2]", response_format=mode) == "json"
    assert problem('{"a": 1}', response_format=mode) is None
    assert problem('```json\n{"a": 1}\n```', response_format=mode) is None
    assert problem("{bad", Gate(json_format=False), response_format=mode) is None
    assert problem("plain text is fine without a response_format") is None


def test_json_schema_mismatches_escalate() -> None:
    mode = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    assert problem('{"name": "Ada", "age": 36}', response_format=mode) is None
    assert problem('{"name": "Ada"}', response_format=mode) == "schema ($: missing 'age')"
    wrong = '{"name": "Ada", "age": "36"}'
    assert problem(wrong, response_format=mode) == "schema ($.age: expected integer)"
    extra = '{"name": "Ada", "age": 36, "x": 1}'
    assert problem(extra, response_format=mode) == "schema ($: unexpected property)"


def test_the_schema_subset() -> None:
    tags = {"properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
    assert schema_problem({"tags": ["a", 1]}, tags) == "$.tags[1]: expected string"
    assert schema_problem({"kind": "c"}, {"properties": {"kind": {"enum": ["a", "b"]}}}) == (
        "$.kind: not one of the enum values"
    )
    assert schema_problem(True, {"type": "integer"}) == "$: expected integer"
    assert schema_problem(2.0, {"type": "integer"}) is None
    assert schema_problem(None, {"type": ["string", "null"]}) is None
    any_of = {"anyOf": [{"type": "string"}, {"type": "number"}]}
    assert schema_problem([], any_of) == "$: matches none of anyOf"
    assert schema_problem(3, any_of) is None


def test_a_good_answer_passes() -> None:
    assert problem("The capital of France is Paris.") is None
