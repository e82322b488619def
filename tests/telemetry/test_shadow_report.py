"""Shadow quality per route, with Wilson intervals."""

from __future__ import annotations

import pytest

from llmroute.telemetry.record import ShadowRecord
from llmroute.telemetry.shadow_report import shadow_report, wilson_interval


def shadow(route: str, ok: bool | None, error: str | None = None) -> ShadowRecord:
    return ShadowRecord(
        decision_id="d", ts=1.0, route=route, routed_model="small", reference_model="large",
        routed_answer="a", reference_answer="b", judge="exact", routed_ok=ok, judge_error=error,
    )  # fmt: skip


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(10, 100) or (0.0, 0.0)
    assert low == pytest.approx(0.0552, abs=1e-3) and high == pytest.approx(0.1744, abs=1e-3)
    low, high = wilson_interval(0, 20) or (1.0, 1.0)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-3)
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize("n", range(1, 60))
def test_wilson_interval_ends_at_exactly_0_and_1(n: int) -> None:
    """None lost of 7 printed ci95 [5.551115123125783e-17, ...] in the JSON report."""
    assert (wilson_interval(0, n) or (1.0, 1.0))[0] == 0.0
    assert (wilson_interval(n, n) or (0.0, 0.0))[1] == 1.0


def test_per_route_and_overall() -> None:
    records = (
        [shadow("code", True)] * 8
        + [shadow("code", False)] * 2
        + [shadow("code", None, "judge timed out")]
        + [shadow("weather", True)] * 5
        + [shadow("weather", None)]
    )
    report = shadow_report(records)
    code, weather = report.routes
    assert (code.route, code.pairs, code.judged, code.lost) == ("code", 11, 10, 2)
    assert code.judge_errors == 1 and code.unjudged == 0
    assert code.lost_share == pytest.approx(0.2)
    low, high = code.interval or (0.0, 0.0)
    assert low < 0.2 < high
    assert weather.lost == 0 and weather.unjudged == 1 and weather.judge_errors == 0
    assert report.overall.judged == 15 and report.overall.lost == 2
    payload = report.to_dict()
    assert payload["overall"]["ci95"][0] < payload["overall"]["lost_share"]


def test_nothing_judged() -> None:
    report = shadow_report([shadow("code", None, "boom")])
    assert report.routes[0].lost_share is None and report.routes[0].interval is None
    assert shadow_report([]).overall.pairs == 0
