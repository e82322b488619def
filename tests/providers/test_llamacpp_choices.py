"""The llamacpp provider's "one of these strings" constraint, as pure logic (no
llama-cpp-python needed): which schemas take it, and the logit mask step by step. The
real model under it is tested in test_llamacpp.py (extra ``local``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmroute.providers.llamacpp import _choice_outputs, _Choices

ENUM = {
    "type": "object",
    "properties": {"route": {"type": "string", "enum": ["code", "math", "none"]}},
    "required": ["route"],
    "additionalProperties": False,
}
EOS = 0


class CharTokenizer:
    """Byte-level 'tokenizer': token id = byte value + 1, EOS = 0, vocab 257."""

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = False) -> list[int]:
        return [b + 1 for b in text]

    def token_eos(self) -> int:
        return EOS


def test_the_llm_router_schema_gives_its_json_answers() -> None:
    assert _choice_outputs(ENUM) == tuple(
        json.dumps({"route": v}) for v in ("code", "math", "none")
    )


@pytest.mark.parametrize(
    "schema",
    [
        {**ENUM, "required": []},
        {**ENUM, "type": "array"},
        {"type": "object", "properties": {"route": {"type": "string"}}, "required": ["route"]},
        {
            "type": "object",
            "properties": {"a": {"enum": ["x"]}, "b": {"enum": ["y"]}},
            "required": ["a"],
        },
        {"type": "object", "properties": {"n": {"enum": [1, 2]}}, "required": ["n"]},
    ],
)
def test_other_schemas_go_to_the_grammar(schema: dict[str, object]) -> None:
    assert _choice_outputs(schema) is None


def _generate(prefer: list[int], outputs: tuple[str, ...]) -> str:
    """Greedy decoding under the mask where the 'model' always prefers the tokens in
    `prefer` (highest first), then anything."""
    choices = _Choices(CharTokenizer(), outputs)
    prompt = [7, 8, 9]
    ids = list(prompt)
    for _ in range(64):
        scores = np.zeros(257, dtype=np.float32)
        for rank, token in enumerate(prefer):
            scores[token] = 100.0 - rank
        masked = choices(np.array(ids), scores)
        assert np.isfinite(masked).sum() >= 1
        token = int(np.argmax(masked))
        if token == EOS:
            break
        ids.append(token)
    return bytes(t - 1 for t in ids[len(prompt) :]).decode()


def test_the_mask_only_lets_an_allowed_answer_through() -> None:
    outputs = _choice_outputs(ENUM)
    assert outputs is not None
    # a model that wants to write 'z' everywhere still writes one of the answers
    assert _generate([ord("z") + 1], outputs) in outputs
    # a model leaning to 'm' picks the math answer and then stops
    assert _generate([ord("m") + 1], outputs) == json.dumps({"route": "math"})
    # ...and one leaning to 'n' the none answer
    assert _generate([ord("n") + 1], outputs) == json.dumps({"route": "none"})


def test_end_of_generation_is_only_allowed_once_an_answer_is_complete() -> None:
    outputs = ("ab", "abc")
    # EOS is the model's favourite: it may stop only once a whole answer is written
    assert _generate([EOS], outputs) == "ab"
    # a model preferring 'c' to stopping goes on to the longer answer, then must stop
    assert _generate([ord("c") + 1, EOS], outputs) == "abc"
    choices = _Choices(CharTokenizer(), outputs)
    first = choices(np.array([5]), np.zeros(257, dtype=np.float32))
    assert np.isneginf(first[EOS])
    assert np.isfinite(first).sum() == 1  # only 'a'
