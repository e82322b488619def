"""`llmroute drift`: has routing got less sure of itself since the baseline window?

Per route, the margins (the deciding layer's lead over the runner-up) of two windows are
compared: the median shift, the population stability index (PSI) over bins cut at the
baseline's quantiles, and the two-sample Kolmogorov–Smirnov test. Beside them: the
default rate (requests no route claimed) and the route mix.

What "decayed" means here. A route is flagged when its margins moved *down* (the recent
median is below the baseline's), by an amount that matters (the median fell by more
than ``drift.margin_drop``, or the PSI exceeds ``drift.psi``), and not by chance (the
KS p-value is below ``drift.ks_p``). All three are needed: the PSI and the KS test react
to any change, margins that grew are not decay, and with the few hundred requests a
route often has a median can fall by a few points between two draws of the same
distribution; requiring a significant KS test keeps unchanged traffic quiet. A route is
only judged when both windows hold at least ``drift.min_requests`` margins for it; else
it is reported as ``insufficient``. Decisions without a margin (rules, pins) count in
the route mix but not in the margin statistics; requests answered without routing
(embeddings, rerank) count nowhere here. Decisions asked for through ``/v1/route``
(`LoggedDecision.route_only`: nothing dispatched) count everywhere, as a dispatched
request's: drift is of routing's decisions, not of what was served, and a client that
asks for the model and calls it itself routes all its traffic there. The whole log is
flagged when the
default rate rose by more than ``drift.default_rate_rise`` (both windows holding at
least ``min_requests`` requests).

The PSI uses as many bins as the data supports (one per 20 margins of the smaller
window, between 2 and 10), since with few samples per bin its value under no change
grows like bins/n and would cross any fixed bound by noise alone.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from llmroute.registry.schema import DriftSettings
from llmroute.telemetry.record import LoggedDecision

__all__ = [
    "DEFAULT_ROUTE",
    "DriftReport",
    "RouteDrift",
    "drift_report",
    "is_default",
    "kolmogorov_sf",
    "ks_2samp",
    "psi",
    "routed_only",
]

DEFAULT_ROUTE = "default"  # the route (and layer) name of decisions the default served
PSI_EPSILON = 1e-4
PSI_MAX_BINS = 10
PSI_PER_BIN = 20

Floats = npt.NDArray[np.float64]


def routed_only(decisions: Sequence[LoggedDecision]) -> Sequence[LoggedDecision]:
    """`decisions` less the requests answered without routing (embeddings, rerank:
    `LoggedDecision.unrouted`), which routing's statistics leave out; `decisions` itself
    when it holds none."""
    if not any(d.unrouted for d in decisions):
        return decisions
    return [d for d in decisions if not d.unrouted]


def is_default(decision: LoggedDecision) -> bool:
    """Whether no rule or route claimed the request (the registry default served it)."""
    return decision.layer == DEFAULT_ROUTE or decision.route == DEFAULT_ROUTE


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution: 2 Σ (-1)^(k-1) exp(-2 k² x²)."""
    if x <= 0.0:
        return 1.0
    if x < 0.2:  # the series converges slowly here, and the value is 1 to 1e-40
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * x * x)
        total += term if k % 2 else -term
        if term < 1e-16:
            break
    return float(min(1.0, max(0.0, 2.0 * total)))


def ks_2samp(a: Sequence[float] | Floats, b: Sequence[float] | Floats) -> tuple[float, float]:
    """Two-sample KS statistic D = sup |F_a - F_b| and its asymptotic p-value (the
    Kolmogorov distribution with Stephens' small-sample correction)."""
    x = np.sort(np.asarray(a, dtype=np.float64))
    y = np.sort(np.asarray(b, dtype=np.float64))
    n, m = x.size, y.size
    if n == 0 or m == 0:
        raise ValueError("both samples must be non-empty")
    points = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, points, side="right") / n
    cdf_y = np.searchsorted(y, points, side="right") / m
    stat = float(np.max(np.abs(cdf_x - cdf_y)))
    en = math.sqrt(n * m / (n + m))
    return stat, kolmogorov_sf((en + 0.12 + 0.11 / en) * stat)


def psi_bins(n_baseline: int, n_recent: int) -> int:
    return int(min(PSI_MAX_BINS, max(2, min(n_baseline, n_recent) // PSI_PER_BIN)))


def psi(
    baseline: Sequence[float] | Floats,
    recent: Sequence[float] | Floats,
    *,
    bins: int | None = None,
    epsilon: float = PSI_EPSILON,
) -> float:
    """Population stability index of `recent` against `baseline`: Σ (r - b) ln(r / b)
    over bins cut at the baseline's quantiles, shares floored at `epsilon`."""
    base = np.asarray(baseline, dtype=np.float64)
    new = np.asarray(recent, dtype=np.float64)
    if base.size == 0 or new.size == 0:
        raise ValueError("both samples must be non-empty")
    count = bins if bins is not None else psi_bins(base.size, new.size)
    inner = np.unique(np.quantile(base, np.linspace(0.0, 1.0, count + 1)[1:-1]))
    b = np.bincount(np.searchsorted(inner, base, side="right"), minlength=inner.size + 1)
    r = np.bincount(np.searchsorted(inner, new, side="right"), minlength=inner.size + 1)
    pb = np.maximum(b / base.size, epsilon)
    pr = np.maximum(r / new.size, epsilon)
    return float(np.sum((pr - pb) * np.log(pr / pb)))


def _shares(counts: Counter[str], names: Sequence[str]) -> Floats:
    total = sum(counts.values())
    return np.array([counts.get(n, 0) / total if total else 0.0 for n in names])


@dataclass(frozen=True, slots=True)
class RouteDrift:
    """One route's two windows. `status`: ``flagged``, ``ok`` or ``insufficient``."""

    route: str
    n_baseline: int
    n_recent: int
    share_baseline: float
    share_recent: float
    margins_baseline: int
    margins_recent: int
    median_baseline: float | None = None
    median_recent: float | None = None
    psi: float | None = None
    ks_stat: float | None = None
    ks_p: float | None = None
    status: str = "insufficient"
    reasons: tuple[str, ...] = ()

    @property
    def median_shift(self) -> float | None:
        if self.median_baseline is None or self.median_recent is None:
            return None
        return self.median_recent - self.median_baseline

    @property
    def flagged(self) -> bool:
        return self.status == "flagged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "status": self.status,
            "reasons": list(self.reasons),
            "n_baseline": self.n_baseline,
            "n_recent": self.n_recent,
            "share_baseline": self.share_baseline,
            "share_recent": self.share_recent,
            "margins_baseline": self.margins_baseline,
            "margins_recent": self.margins_recent,
            "median_baseline": self.median_baseline,
            "median_recent": self.median_recent,
            "median_shift": self.median_shift,
            "psi": self.psi,
            "ks_stat": self.ks_stat,
            "ks_p": self.ks_p,
        }


@dataclass(frozen=True, slots=True)
class DriftReport:
    settings: DriftSettings
    n_baseline: int
    n_recent: int
    routes: list[RouteDrift] = field(default_factory=list)
    default_rate_baseline: float | None = None
    default_rate_recent: float | None = None
    default_flagged: bool = False
    mix_tv: float | None = None  # total variation distance between the route mixes
    mix_psi: float | None = None

    @property
    def default_rate_rise(self) -> float | None:
        if self.default_rate_baseline is None or self.default_rate_recent is None:
            return None
        return self.default_rate_recent - self.default_rate_baseline

    @property
    def flagged_routes(self) -> list[str]:
        return [r.route for r in self.routes if r.flagged]

    @property
    def flagged(self) -> bool:
        return self.default_flagged or bool(self.flagged_routes)

    @property
    def enough_data(self) -> bool:
        """Whether anything could be judged at all."""
        enough = self.settings.min_requests
        judged = any(r.status != "insufficient" for r in self.routes)
        return judged or (self.n_baseline >= enough and self.n_recent >= enough)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flagged": self.flagged,
            "flagged_routes": self.flagged_routes,
            "enough_data": self.enough_data,
            "n_baseline": self.n_baseline,
            "n_recent": self.n_recent,
            "default_rate_baseline": self.default_rate_baseline,
            "default_rate_recent": self.default_rate_recent,
            "default_rate_rise": self.default_rate_rise,
            "default_flagged": self.default_flagged,
            "mix_tv": self.mix_tv,
            "mix_psi": self.mix_psi,
            "settings": self.settings.model_dump(mode="json"),
            "routes": [r.to_dict() for r in self.routes],
        }


def _margins(decisions: Sequence[LoggedDecision], route: str) -> Floats:
    values = [d.margin for d in decisions if d.route == route and d.margin is not None]
    return np.array([v for v in values if math.isfinite(v)], dtype=np.float64)


def _route_drift(
    route: str,
    baseline: Sequence[LoggedDecision],
    recent: Sequence[LoggedDecision],
    counts: tuple[Counter[str], Counter[str]],
    settings: DriftSettings,
) -> RouteDrift:
    old, new = _margins(baseline, route), _margins(recent, route)
    common: dict[str, Any] = {
        "route": route,
        "n_baseline": counts[0].get(route, 0),
        "n_recent": counts[1].get(route, 0),
        "share_baseline": counts[0].get(route, 0) / max(1, len(baseline)),
        "share_recent": counts[1].get(route, 0) / max(1, len(recent)),
        "margins_baseline": int(old.size),
        "margins_recent": int(new.size),
        "median_baseline": float(np.median(old)) if old.size else None,
        "median_recent": float(np.median(new)) if new.size else None,
    }
    enough = settings.min_requests
    if old.size < enough or new.size < enough:
        why = f"fewer than {enough} margins in a window ({old.size} baseline, {new.size} recent)"
        return RouteDrift(**common, status="insufficient", reasons=(why,))
    value = psi(old, new)
    stat, p = ks_2samp(old, new)
    drop = common["median_baseline"] - common["median_recent"]
    material: list[str] = []
    if drop > settings.margin_drop:
        material.append(f"median margin fell {drop:.3f} (> {settings.margin_drop:g})")
    if value > settings.psi:
        material.append(f"PSI {value:.3f} (> {settings.psi:g})")
    decayed = drop > 0 and bool(material) and p < settings.ks_p
    reasons: tuple[str, ...] = ()
    if decayed:
        reasons = (*material, f"KS p={p:.2g} (< {settings.ks_p:g})")
    return RouteDrift(
        **common,
        psi=value,
        ks_stat=stat,
        ks_p=p,
        status="flagged" if decayed else "ok",
        reasons=reasons,
    )


def drift_report(
    baseline: Sequence[LoggedDecision],
    recent: Sequence[LoggedDecision],
    settings: DriftSettings | None = None,
) -> DriftReport:
    """Compare two windows of decisions (see the module docstring for the rules).
    Requests answered without routing (embeddings, rerank) are left out of both."""
    bounds = settings if settings is not None else DriftSettings()
    baseline, recent = routed_only(baseline), routed_only(recent)
    counts = (Counter(d.route for d in baseline), Counter(d.route for d in recent))
    names = sorted(set(counts[0]) | set(counts[1]))
    routes = [
        _route_drift(name, baseline, recent, counts, bounds)
        for name in names
        if name != DEFAULT_ROUTE
    ]
    rate_old = sum(map(is_default, baseline)) / len(baseline) if baseline else None
    rate_new = sum(map(is_default, recent)) / len(recent) if recent else None
    default_flagged = (
        rate_old is not None
        and rate_new is not None
        and len(baseline) >= bounds.min_requests
        and len(recent) >= bounds.min_requests
        and rate_new - rate_old > bounds.default_rate_rise
    )
    mix_tv = mix_psi = None
    if baseline and recent:
        p, q = _shares(counts[0], names), _shares(counts[1], names)
        mix_tv = float(0.5 * np.abs(p - q).sum())
        pe, qe = np.maximum(p, PSI_EPSILON), np.maximum(q, PSI_EPSILON)
        mix_psi = float(np.sum((qe - pe) * np.log(qe / pe)))
    return DriftReport(
        settings=bounds,
        n_baseline=len(baseline),
        n_recent=len(recent),
        routes=routes,
        default_rate_baseline=rate_old,
        default_rate_recent=rate_new,
        default_flagged=default_flagged,
        mix_tv=mix_tv,
        mix_psi=mix_psi,
    )
