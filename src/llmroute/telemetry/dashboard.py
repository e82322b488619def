"""What the web dashboard shows about one window of the decision log, as plain JSON.

It is `llmroute report` and `llmroute drift` over the same rows, plus what a page needs
to draw: time buckets (requests per route, errors, cache hits, latency percentiles,
cost), per-route margins and confidence, which layer decided, and the newest decisions.
Drift compares the window with the one just before it, of the same length.

Reads are bounded: at most `max_rows` of the newest decisions of each window are loaded
(`sample` says how many the window holds), so a busy week cannot exhaust the process.
No prompt text ever leaves this module: the dashboard is aggregates and decision ids.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmroute.registry.schema import DriftSettings, Registry
from llmroute.telemetry.drift import DEFAULT_ROUTE, drift_report, is_default
from llmroute.telemetry.record import FeedbackRecord, LoggedDecision, ShadowRecord
from llmroute.telemetry.report import build_report, cost_function, is_error
from llmroute.telemetry.windows import Window

__all__ = [
    "DEFAULT_MAX_ROWS",
    "RECENT_ROWS",
    "SERIES_ROUTES",
    "Rows",
    "baseline_window",
    "bucket_step",
    "dashboard_data",
    "empty_dashboard",
    "json_safe",
]

DEFAULT_MAX_ROWS = 20_000  # per window; ~1 s of parsing on this project's 2-core machine
RECENT_ROWS = 25
SERIES_ROUTES = 6  # routes drawn on their own in the request chart; the rest are "other"
_TARGET_BUCKETS = 60
_STEPS_S = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


@dataclass(frozen=True, slots=True)
class Rows:
    """One window's rows as read: `decisions` are the newest `len(decisions)` of the
    `in_window` the log holds between the window's bounds."""

    decisions: Sequence[LoggedDecision]
    in_window: int
    feedback: Sequence[FeedbackRecord] = ()
    shadows: Sequence[ShadowRecord] = ()


def bucket_step(span_s: float, target: int = _TARGET_BUCKETS) -> int:
    """The smallest round step (10 s … 1 day) that cuts `span_s` into at most `target`
    buckets; whole days beyond that."""
    for step in _STEPS_S:
        if span_s / step <= target:
            return step
    return 86400 * math.ceil(span_s / (86400 * target))


def baseline_window(window: Window) -> Window:
    """The window of the same length that ends where `window` starts."""
    span = window.end - window.since
    return Window(since=window.since - span, until=window.since, text=f"previous {window.text}")


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None: browsers' JSON.parse rejects them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _median(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _costs(decisions: Sequence[LoggedDecision], registry: Registry | None) -> list[float]:
    """Each request's known cost (0 when neither logged nor priceable)."""
    cost_of = cost_function(registry)
    return [cost_of(d) or 0.0 for d in decisions]


def _series(
    decisions: Sequence[LoggedDecision], window: Window, costs: Sequence[float]
) -> dict[str, Any]:
    step = bucket_step(window.end - window.since)
    start = math.floor(window.since / step) * step
    count = max(1, math.ceil((window.end - start) / step))
    out: dict[str, Any] = {"step_s": step, "t": [float(start + i * step) for i in range(count)]}
    if not decisions:
        zeros = [0] * count
        out.update(
            requests=zeros,
            errors=zeros,
            cache_hits=zeros,
            p50_ms=[None] * count,
            p99_ms=[None] * count,
            cost_usd=[0.0] * count,
            routes={},
        )
        return out
    ts = np.fromiter((d.ts for d in decisions), dtype=np.float64, count=len(decisions))
    index = np.clip(((ts - start) // step).astype(np.int64), 0, count - 1)
    flags = np.array([(is_error(d), d.cache_hit) for d in decisions], dtype=bool)
    out["requests"] = np.bincount(index, minlength=count).tolist()
    out["errors"] = np.bincount(index, weights=flags[:, 0], minlength=count).astype(int).tolist()
    out["cache_hits"] = (
        np.bincount(index, weights=flags[:, 1], minlength=count).astype(int).tolist()
    )
    weights = np.asarray(costs, dtype=np.float64)
    out["cost_usd"] = np.bincount(index, weights=weights, minlength=count).tolist()
    latency = np.array([d.latency_ms for d in decisions], dtype=np.float64)
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(count + 1))
    p50: list[float | None] = []
    p99: list[float | None] = []
    for i in range(count):
        chunk = latency[order[bounds[i] : bounds[i + 1]]]
        p50.append(float(np.percentile(chunk, 50)) if chunk.size else None)
        p99.append(float(np.percentile(chunk, 99)) if chunk.size else None)
    out["p50_ms"], out["p99_ms"] = p50, p99
    totals = Counter(d.route for d in decisions)
    shown = [name for name, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    shown = shown[:SERIES_ROUTES]
    codes = {name: i for i, name in enumerate(shown)}
    route_index = np.array([codes.get(d.route, len(shown)) for d in decisions], dtype=np.int64)
    per_route = np.zeros((len(shown) + 1, count), dtype=np.int64)
    np.add.at(per_route, (route_index, index), 1)
    routes = {name: per_route[i].tolist() for i, name in enumerate(shown)}
    if per_route[len(shown)].any():
        routes["other"] = per_route[len(shown)].tolist()
    out["routes"] = routes
    return out


def _route_extras(decisions: Sequence[LoggedDecision]) -> dict[str, dict[str, float | None]]:
    margins: dict[str, list[float]] = defaultdict(list)
    confidences: dict[str, list[float]] = defaultdict(list)
    for d in decisions:
        if d.margin is not None:
            margins[d.route].append(d.margin)
        confidences[d.route].append(d.confidence)
    return {
        route: {"median_margin": _median(margins[route]), "mean_confidence": _mean(values)}
        for route, values in confidences.items()
    }


def _recent(decisions: Sequence[LoggedDecision]) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "ts": d.ts,
            "route": d.route,
            "model": d.model,
            "served_model": d.served_model,
            "layer": d.layer,
            "confidence": d.confidence,
            "margin": d.margin,
            "status": d.status,
            "error": d.error,
            "latency_ms": d.latency_ms,
            "cache_hit": d.cache_hit,
            "stream": d.stream,
        }
        for d in reversed(decisions[-RECENT_ROWS:])
    ]


def _sample(rows: Rows, max_rows: int) -> dict[str, Any]:
    shown = len(rows.decisions)
    return {
        "rows": shown,
        "in_window": rows.in_window,
        "truncated": rows.in_window > shown,
        "max_rows": max_rows,
    }


def empty_dashboard(
    window: Window, *, url: str | None, message: str, max_rows: int = DEFAULT_MAX_ROWS
) -> dict[str, Any]:
    """The payload when there is nothing to show (log off, empty, not migrated)."""
    return {
        "window": window.to_dict(),
        "log": {"enabled": url is not None, "url": url, "message": message},
        "sample": {"rows": 0, "in_window": 0, "truncated": False, "max_rows": max_rows},
        "summary": None,
        "series": _series((), window, ()),
        "routes": [],
        "models": [],
        "layers": [],
        "drift": None,
        "shadow": None,
        "recent": [],
    }


def dashboard_data(
    current: Rows,
    previous: Rows,
    registry: Registry | None,
    *,
    window: Window,
    url: str,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> dict[str, Any]:
    """The dashboard payload for `window` (see docs/telemetry.md#dashboard for the
    fields). `previous` is the `baseline_window` of `window`, for drift."""
    decisions = current.decisions
    if not decisions:
        return empty_dashboard(
            window, url=url, message=f"no decisions in the last {window.text}", max_rows=max_rows
        )
    report = build_report(decisions, registry, feedback=current.feedback, shadows=current.shadows)
    drift_settings = registry.drift if registry is not None else DriftSettings()
    drift = drift_report(previous.decisions, decisions, drift_settings)
    drift_of = {r.route: r for r in drift.routes}
    shadow_of = {s.route: s for s in report.shadow.routes}
    feedback_of = {f.route: f for f in report.feedback}
    extras = _route_extras(decisions)
    total = report.total
    span = max(window.end - window.since, 1e-9)
    margins = [d.margin for d in decisions if d.margin is not None]
    costs = _costs(decisions, registry)

    routes = []
    for group in report.routes:
        route_drift = drift_of.get(group.name)
        shadow = shadow_of.get(group.name)
        feedback = feedback_of.get(group.name)
        routes.append(
            {
                "name": group.name,
                "n": group.n,
                "share": group.share,
                "error_rate": group.error_rate,
                "fallback_rate": group.fallback_rate,
                "escalation_rate": group.escalation_rate,
                "cache_hits": group.cache_hits,
                "p50_ms": group.p50_ms,
                "p99_ms": group.p99_ms,
                "cost_usd": group.cost_usd,
                "savings": group.savings,
                **extras.get(group.name, {}),
                "drift": route_drift.status if route_drift is not None else None,
                "drift_reasons": list(route_drift.reasons) if route_drift is not None else [],
                "shadow_lost_share": shadow.lost_share if shadow is not None else None,
                "feedback_mean_score": feedback.mean_score if feedback is not None else None,
                "thumbs_up_share": feedback.thumbs_up_share if feedback is not None else None,
            }
        )
    models = [
        {
            "name": group.name,
            "n": group.n,
            "share": group.share,
            "error_rate": group.error_rate,
            "fallback_rate": group.fallback_rate,
            "p50_ms": group.p50_ms,
            "p99_ms": group.p99_ms,
            "cost_usd": group.cost_usd,
        }
        for group in report.models
    ]
    layers = Counter(d.layer for d in decisions)
    previous_window = baseline_window(window)
    payload: dict[str, Any] = json_safe(
        {
            "window": window.to_dict(),
            "log": {"enabled": True, "url": url, "message": None},
            "sample": _sample(current, max_rows),
            "summary": {
                "requests": current.in_window,
                "rate_per_s": current.in_window / span,
                "error_rate": total.error_rate,
                "fallback_rate": total.fallback_rate,
                "escalation_rate": total.escalation_rate,
                "cache_hit_rate": total.cache_hits / total.n,
                "default_rate": sum(map(is_default, decisions)) / total.n,
                "p50_ms": total.p50_ms,
                "p99_ms": total.p99_ms,
                "spend_usd": math.fsum(costs),
                "cost_usd": total.cost_usd,
                "counterfactual_usd": total.counterfactual_usd,
                "savings": total.savings,
                "strongest_model": report.strongest,
                "median_margin": _median(margins),
                "mean_confidence": _mean([d.confidence for d in decisions]),
                "unpriced": total.unpriced,
            },
            "series": _series(decisions, window, costs),
            "routes": routes,
            "models": models,
            "layers": [
                {"name": name, "n": n, "share": n / total.n}
                for name, n in sorted(layers.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "drift": {
                "baseline": previous_window.to_dict(),
                "baseline_sample": _sample(previous, max_rows),
                "flagged": drift.flagged,
                "flagged_routes": drift.flagged_routes,
                "enough_data": drift.enough_data,
                "default_rate_baseline": drift.default_rate_baseline,
                "default_rate_recent": drift.default_rate_recent,
                "default_flagged": drift.default_flagged,
                "mix_tv": drift.mix_tv,
                "default_route": DEFAULT_ROUTE,
            },
            "shadow": report.shadow.to_dict(),
            "recent": _recent(decisions),
        }
    )
    return payload
