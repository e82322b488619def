"""The ``llmroute.requests`` line (``--log-requests``): its cost in fixed point on the
text line, a number in the JSON line's fields."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from llmroute.decision import Decision, new_decision_id
from llmroute.telemetry.record import DecisionRecord
from llmroute.telemetry.request_log import REQUESTS_LOGGER, log_request


def _record(cost_usd: float | None) -> DecisionRecord:
    decision = Decision(
        id=new_decision_id(),
        route="code",
        model="small",
        layer="intent",
        confidence=0.9,
        margin=0.2,
        reason="intent match",
        registry_version="v1",
        signals=(),
        encode_us=1.0,
        total_us=2.0,
    )
    return DecisionRecord(decision, ts=0.0, status=200, latency_ms=3.0, cost_usd=cost_usd)


@pytest.mark.parametrize(
    ("cost", "said"),
    [
        (6e-07, "cost_usd=0.0000006"),  # "cost_usd=6e-07" before
        (1.05e-06, "cost_usd=0.00000105"),  # every digit: the line is summed, not read
        (0.0025, "cost_usd=0.0025"),
        (12345.5, "cost_usd=12345.5"),  # no thousands comma: a program sums the line
        (None, "cost_usd=None"),
    ],
)
def test_the_text_line_writes_the_cost_in_fixed_point(
    cost: float | None, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=REQUESTS_LOGGER):
        log_request(_record(cost))
    (line,) = caplog.records
    assert line.getMessage().endswith(f" {said}")
    assert line.request["cost_usd"] == cost  # type: ignore[attr-defined]  # JSON: the number


@pytest.mark.parametrize(
    ("attempts", "counted"),
    [
        ((), 0),  # the first model answered: one upstream call, nothing passed over
        (("broken via fake (500: boom)",), 1),  # a failure, then the answer
        # a model skipped without a call (its budget) counts as passed over, as the
        # x-llmroute-attempts header counts it
        (("large (over its daily budget ($1 of $1); not called)", "mid via up (503)"), 2),
    ],
)
def test_the_lines_attempts_counts_the_rows_attempt_path(
    attempts: tuple[str, ...], counted: int, caplog: pytest.LogCaptureFixture
) -> None:
    record = dataclasses.replace(_record(0.0), attempts=attempts)
    with caplog.at_level(logging.INFO, logger=REQUESTS_LOGGER):
        log_request(record)
    (line,) = caplog.records
    assert line.request["attempts"] == counted  # type: ignore[attr-defined]
