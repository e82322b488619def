"""`FromExamplesResult.summary` warns when out-of-scope examples drove the threshold to
zero: text unlike every example (another domain) would then always find a route."""

from __future__ import annotations

from pathlib import Path

from llmroute.evaluate.calibrate import ThresholdChoice
from llmroute.evaluate.from_examples import FromExamplesResult
from llmroute.registry import parse_registry

ECHO = Path(__file__).resolve().parents[2] / "examples" / "echo.yaml"


def _result(threshold: float, out_of_scope: int) -> FromExamplesResult:
    registry = parse_registry(ECHO.read_text(), source="echo.yaml").registry
    choice = ThresholdChoice(threshold, 0.9, 0.95, "max in-scope accuracy")
    return FromExamplesResult(registry, "", choice, 2, 6, out_of_scope, 6, out_of_scope, 5)


def test_a_zero_threshold_with_out_of_scope_examples_is_warned_about() -> None:
    assert any(line.startswith("warning: threshold 0") for line in _result(0.0, 4).summary())
    assert not any("warning" in line for line in _result(0.4, 4).summary())
    assert not any("warning" in line for line in _result(0.0, 0).summary())
