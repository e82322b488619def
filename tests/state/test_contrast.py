"""`guarded_terms`: what two questions must share, beyond their meaning, to share a cached
answer (the pairs below embed at 0.97-0.995 with the built-in encoders: a walkthrough
got each one served the other's answer from the semantic cache)."""

from __future__ import annotations

import pytest

from llmroute.state.contrast import guarded_terms


@pytest.mark.parametrize(
    ("asked", "stored"),
    [
        ("should I not sell my shares before the end of the quarter",
         "should I sell my shares before the end of the quarter"),
        ("can I not take ibuprofen with my medication", "can I take ibuprofen with my medication"),
        ("customers who have never placed an order", "customers who have placed an order"),
        ("is it unsafe to take ibuprofen", "is it safe to take ibuprofen"),
        ("the side effects of decreasing the dose", "the side effects of increasing the dose"),
        ("proxy websockets to my backend on port eighty", "proxy websockets to my backend"),
        ("set the thermostat to -5 degrees", "set the thermostat to 5 degrees"),
        ("what is 1e3 plus one", "what is 13 plus one"),
        ("the cheapest flights before noon", "the cheapest flights after noon"),
        ("why can't I log in", "why can I log in"),
    ],
)  # fmt: skip
def test_questions_that_differ_in_a_guarded_term_never_share_an_answer(
    asked: str, stored: str
) -> None:
    assert guarded_terms(asked) != guarded_terms(stored)


@pytest.mark.parametrize(
    ("asked", "stored"),
    [
        ("how do I reset my password", "how can I reset my password?"),
        ("I can't log in", "I cannot log in"),
        ("what is the weather like today", "how is the weather today"),
        ("increase the timeout to 30 seconds", "increasing the timeout to 30 seconds"),
    ],
)
def test_paraphrases_keep_their_terms(asked: str, stored: str) -> None:
    assert guarded_terms(asked) == guarded_terms(stored)
