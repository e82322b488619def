"""`llmroute report`'s dollars: four places, or two significant digits below a tenth of a
cent, so a route of cheap requests does not read as free."""

from __future__ import annotations

from llmroute.cli.telemetry import _usd


def test_small_costs_keep_two_significant_digits() -> None:
    assert _usd(12.345678) == "12.3457"
    assert _usd(0.0) == "0.0000"
    assert _usd(0.0000123) == "0.000012"
    assert _usd(0.00009) == "0.000090"
    assert _usd(0.00014) == "0.00014"  # four places cut it to one digit: "0.0001"
    assert _usd(0.0015) == "0.0015"
    assert _usd(None) == "n/a"
