"""`usd`: dollar amounts in messages, readable however small."""

from __future__ import annotations

import pytest

from llmroute.money import usd


@pytest.mark.parametrize(
    ("amount", "said"),
    [
        (0.0, "$0"),
        (5.0, "$5"),
        (0.25, "$0.25"),
        (50.01321, "$50.0132"),
        (6.0, "$6"),
        (0.04, "$0.04"),
        (0.000001, "$0.000001"),
        (0.0000012345, "$0.0000012"),
        (0.00006, "$0.00006"),
        (0.0099999, "$0.01"),
        (1e-15, "$0"),  # below a trillionth of a dollar
        (-0.5, "-$0.5"),
    ],
)
def test_amounts_keep_their_digits_below_a_cent(amount: float, said: str) -> None:
    assert usd(amount) == said
