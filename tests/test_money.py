"""`usd`: dollar amounts in messages, readable however small; `usd_as_written`: a
configured amount with all its digits."""

from __future__ import annotations

import pytest

from llmroute.money import usd, usd_as_written


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


@pytest.mark.parametrize(
    ("amount", "said"),
    [
        (0.0, "$0"),
        (3.0, "$3"),
        (0.1, "$0.1"),
        (1e-06, "$0.000001"),
        (0.01875, "$0.01875"),  # usd: $0.0188
        (0.0000012345, "$0.0000012345"),
        (1e22, "$10000000000000000000000"),
        (-2.5, "-$2.5"),
    ],
)
def test_configured_amounts_keep_every_digit_and_no_exponent(amount: float, said: str) -> None:
    assert usd_as_written(amount) == said
