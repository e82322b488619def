"""`llmroute report`'s dollars: `llmroute.money.dollars`, as budget messages, the
``--log-requests`` line and the dashboard write them: four decimals from a cent up, two
significant digits below, never an exponent, trailing zeros dropped."""

from __future__ import annotations

from llmroute.cli.telemetry import _usd
from llmroute.money import usd


def test_small_costs_keep_two_significant_digits() -> None:
    assert _usd(12.345678) == "12.3457"
    assert _usd(0.0) == "0"
    assert _usd(0.0000123) == "0.000012"
    assert _usd(0.00014) == "0.00014"  # four places cut it to one digit: "0.0001"
    assert _usd(0.0015) == "0.0015"
    assert _usd(None) == "n/a"


def test_costs_read_as_budget_messages_write_them() -> None:
    """$0.0009996 rounds to two significant digits ("0.00100" before: three digits,
    more precision than two-digit rounding has, and not what `usd` says)."""
    assert _usd(0.0009996) == "0.001" and usd(0.0009996) == "$0.001"
    assert _usd(0.00009) == "0.00009"  # not "0.000090"
    assert _usd(6e-07) == "0.0000006"
    for value in (0.0009996, 0.00009, 0.25, 50.01321, 6e-07, 1e-15):
        assert f"${_usd(value)}" == usd(value)
