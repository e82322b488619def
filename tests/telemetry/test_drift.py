"""Drift between two windows of the decision log: margins, default rate, route mix."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from log_factory import logged

from llmroute.registry.schema import DriftSettings
from llmroute.telemetry.drift import drift_report, kolmogorov_sf, ks_2samp, psi
from llmroute.telemetry.record import LoggedDecision

ROUTES = ("code", "weather", "cooking")


def window(
    rng: np.random.Generator,
    n: int = 300,
    *,
    shift: dict[str, float] | None = None,
    default_rate: float = 0.1,
) -> list[LoggedDecision]:
    """`n` decisions per route with Beta-distributed margins (shifted down per route),
    plus `default_rate` of the total served by the default."""
    out = []
    for route in ROUTES:
        margins = np.clip(rng.beta(4, 3, size=n) - (shift or {}).get(route, 0.0), 0.0, 1.0)
        out += [logged(route, margin=float(m)) for m in margins]
    n_default = round(default_rate * len(out) / (1 - default_rate))
    out += [logged("default", margin=float(m)) for m in rng.uniform(0, 0.2, n_default)]
    # Rules and pins decide without a margin: in the mix, not in the margin statistics.
    out += [logged("code", margin=None, layer="rules") for _ in range(20)]
    return out


def test_ks_matches_known_values() -> None:
    # Kolmogorov distribution: P(K > 1.36) ≈ 0.049, P(K > 1.63) ≈ 0.0098.
    assert kolmogorov_sf(1.36) == pytest.approx(0.0494, abs=1e-3)
    assert kolmogorov_sf(1.63) == pytest.approx(0.0098, abs=5e-4)
    assert kolmogorov_sf(0.0) == 1.0
    stat, p = ks_2samp([1, 2, 3, 4], [1, 2, 3, 4])
    assert stat == 0.0 and p == 1.0
    stat, p = ks_2samp(np.arange(100.0), np.arange(100.0) + 1000)
    assert stat == 1.0 and p < 1e-10


def test_ks_p_is_roughly_uniform_under_the_null() -> None:
    rng = np.random.default_rng(7)
    ps = [ks_2samp(rng.normal(size=200), rng.normal(size=150))[1] for _ in range(300)]
    assert 0.02 < float(np.mean(np.array(ps) < 0.1)) < 0.2


def test_psi_is_zero_for_equal_samples_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=1000)
    assert psi(base, base) == pytest.approx(0.0, abs=1e-12)
    assert psi(base, rng.normal(size=1000)) < 0.05
    assert psi(base, rng.normal(loc=1.0, size=1000)) > 0.25


def test_shifted_route_is_flagged_and_the_others_are_not() -> None:
    rng = np.random.default_rng(0)
    report = drift_report(window(rng), window(rng, shift={"weather": 0.15}), DriftSettings())
    by_route = {r.route: r for r in report.routes}
    assert report.flagged_routes == ["weather"]
    weather = by_route["weather"]
    assert weather.median_shift is not None and weather.median_shift < -0.1
    assert weather.ks_p is not None and weather.ks_p < 0.01
    assert any("median" in reason for reason in weather.reasons)
    assert by_route["code"].status == "ok"
    assert by_route["code"].n_recent == 320 and by_route["code"].margins_recent == 300
    assert not report.default_flagged
    payload = report.to_dict()
    assert payload["flagged"] is True and payload["flagged_routes"] == ["weather"]


@pytest.mark.parametrize("seed", range(25))
def test_unshifted_traffic_is_quiet(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    report = drift_report(window(rng), window(rng), DriftSettings())
    assert not report.flagged, [r.to_dict() for r in report.routes if r.flagged]
    assert report.mix_tv is not None and report.mix_tv < 0.05


def test_rising_margins_are_not_decay() -> None:
    rng = np.random.default_rng(3)
    report = drift_report(window(rng), window(rng, shift={"code": -0.2}), DriftSettings())
    assert not report.flagged
    code = next(r for r in report.routes if r.route == "code")
    assert code.ks_p is not None and code.ks_p < 0.01  # changed, but upwards


def test_too_few_requests_are_insufficient_not_flagged() -> None:
    rng = np.random.default_rng(5)
    settings = DriftSettings(min_requests=50)
    report = drift_report(window(rng, n=20), window(rng, n=20, shift={"weather": 0.3}), settings)
    assert not report.flagged
    assert {r.status for r in report.routes} == {"insufficient"}
    assert "fewer than 50" in report.routes[0].reasons[0]
    assert not report.enough_data or report.n_baseline >= 50


def test_default_rate_rise_flags_the_log() -> None:
    rng = np.random.default_rng(9)
    report = drift_report(window(rng), window(rng, default_rate=0.3), DriftSettings())
    assert report.default_flagged and report.flagged
    assert report.default_rate_rise is not None and report.default_rate_rise > 0.15
    assert report.flagged_routes == []


def test_route_mix_and_new_routes() -> None:
    base = [logged("code") for _ in range(50)] + [logged("weather") for _ in range(50)]
    recent = [logged("code") for _ in range(50)] + [logged("travel") for _ in range(50)]
    report = drift_report(base, recent, DriftSettings())
    assert report.mix_tv == pytest.approx(0.5)
    assert report.mix_psi is not None and report.mix_psi > 1.0
    shares = {r.route: (r.share_baseline, r.share_recent) for r in report.routes}
    assert shares["travel"] == (0.0, 0.5) and shares["weather"] == (0.5, 0.0)


def test_empty_windows() -> None:
    report = drift_report([], [], DriftSettings())
    assert not report.flagged and not report.enough_data
    assert report.routes == [] and report.default_rate_baseline is None


def test_embeddings_and_rerank_answers_count_nowhere_in_drift() -> None:
    """Embeddings and rerank answers are logged (for their spend) but were not routed:
    a burst of them in one window moves neither the route mix nor the default rate,
    and they are no route of their own."""
    rng = np.random.default_rng(11)
    base, recent = window(rng), window(rng)
    unrouted = [
        logged(f"({api})", margin=None, layer="(unrouted)", model="embed", api=api)
        for api in ("embeddings", "rerank")
        for _ in range(2000)
    ]
    plain = drift_report(base, recent, DriftSettings())
    report = drift_report(base, recent + unrouted, DriftSettings())
    assert report.n_recent == plain.n_recent
    assert report.mix_tv == plain.mix_tv and report.mix_psi == plain.mix_psi
    assert report.default_rate_recent == plain.default_rate_recent
    assert [r.route for r in report.routes] == [r.route for r in plain.routes]
    assert report.flagged == plain.flagged


def test_route_only_decisions_count_in_drift_as_routed_requests_do() -> None:
    """``/v1/route`` decisions dispatch nothing but are routing decisions: a window of
    them alone is judged as the same decisions dispatched would be (its default rate,
    margins and mix), so a client that routes through ``/v1/route`` has its drift seen."""
    rng = np.random.default_rng(13)
    base, recent = window(rng), window(rng, shift={"code": 0.3}, default_rate=0.3)
    dispatched = drift_report(base, recent, DriftSettings())
    as_route_only = [dataclasses.replace(d, route_only=True) for d in recent]
    report = drift_report(base, as_route_only, DriftSettings())
    assert report.to_dict() == dispatched.to_dict()
    assert report.default_flagged and report.flagged_routes == ["code"]
