"""`usd`: dollar amounts in messages, readable however small; `usd_as_written`: a
configured amount with all its digits. Both group thousands with commas, as counts are
written (``12,345 requests``); `dollars` ungrouped is the figure a program reads."""

from __future__ import annotations

import pytest

from llmroute.money import dollars, usd, usd_as_written


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
        (1234.56789, "$1,234.5679"),
        (12345.67, "$12,345.67"),  # "$12345.67" before
        (-1234567.0, "-$1,234,567"),
        (999.99999, "$1,000"),
        (0.03125, "$0.0313"),  # a half rounds up, as the dashboard's toFixed: "$0.0312" before
        (1.40625, "$1.4063"),
        (1e21, "$1,000,000,000,000,000,000,000"),
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
        (1e22, "$10,000,000,000,000,000,000,000"),
        (12345.678901, "$12,345.678901"),
        (-2.5, "-$2.5"),
    ],
)
def test_configured_amounts_keep_every_digit_and_no_exponent(amount: float, said: str) -> None:
    assert usd_as_written(amount) == said


def test_a_figure_for_a_program_is_not_grouped() -> None:
    assert dollars(12345.678901, exact=True, grouped=False) == "12345.678901"
    assert dollars(1234567.5, grouped=False) == "1234567.5"
    assert dollars(1234567.5) == "1,234,567.5"
