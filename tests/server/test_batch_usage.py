"""A batch's ``usage``: the tokens of its answers summed whatever the endpoint's shape
(chat and completions, Responses, embeddings), odd values counted as none, and carried
on from an earlier run's total when a batch is taken over."""

from __future__ import annotations

from typing import Any

from llmroute.server.batch_run import _Answers

CHAT = {
    "prompt_tokens": 10,
    "completion_tokens": 4,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
RESPONSES = {
    "input_tokens": 7,
    "output_tokens": 3,
    "input_tokens_details": {"cached_tokens": 1},
    "output_tokens_details": {"reasoning_tokens": 0},
}
EMBEDDINGS = {"prompt_tokens": 5, "total_tokens": 5}


def test_usage_is_summed_across_shapes() -> None:
    answers = _Answers()
    odd: list[Any] = [None, "x", {"prompt_tokens": True}, {"prompt_tokens": -3}]
    for usage in (CHAT, RESPONSES, EMBEDDINGS, *odd):
        answers.add(b"{}\n", True, usage)
    assert answers.usage() == {
        "input_tokens": 22,
        "input_tokens_details": {"cached_tokens": 9},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 29,
    }
    assert (answers.ok, answers.failed) == (7, 0)


def test_a_run_taking_over_carries_the_earlier_usage_on() -> None:
    earlier = _Answers()
    earlier.add(b"{}\n", True, CHAT)
    later = _Answers(1, 0, earlier.usage())
    later.add(b"{}\n", False, RESPONSES)
    assert later.usage()["input_tokens"] == 17 and later.usage()["total_tokens"] == 24
    assert (later.ok, later.failed) == (1, 1)
