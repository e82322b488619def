"""What the web dashboard shows about one window of the decision log, as plain JSON.

It is `llmroute report` and `llmroute drift` over the same rows, plus what a page needs
to draw: time buckets (requests per route, errors, cache hits, latency percentiles,
cost), per-route margins and confidence, which layer decided, and the newest decisions.
Drift compares the window with the one just before it, of the same length.

Reads are bounded. The database counts requests, errors, fallbacks, cache hits and
spend per (time bucket, route, model) over the whole window (`Store.decision_buckets`),
so the charts and counts are exact for a week of traffic; percentiles, margins,
savings, drift and the newest decisions come from at most `max_rows` of the newest
rows of each window (`sample` says how many the window holds). No prompt text is read:
the dashboard is aggregates and decision ids. Embeddings and rerank requests count in
the requests, errors, latency and spend (routes ``(embeddings)`` and ``(rerank)``), not
in margins, confidence, layers, the default rate, drift or savings. The error, fallback,
escalation and cache hit rates have the report's denominators (`report.of_dispatched`,
`report.of_routed`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmroute.json_values import json_safe
from llmroute.registry.schema import DriftSettings, Registry
from llmroute.telemetry.drift import DEFAULT_ROUTE, drift_report, is_default, routed_only
from llmroute.telemetry.record import FeedbackRecord, LoggedDecision, ShadowRecord
from llmroute.telemetry.report import (
    NO_API,
    UNTAGGED,
    build_report,
    is_error,
    is_fallback,
    of_dispatched,
    of_routed,
)
from llmroute.telemetry.store.base import ApiTotal, ClientTotal, DecisionBucket, TagTotal
from llmroute.telemetry.windows import Window

__all__ = [
    "DEFAULT_MAX_ROWS",
    "RECENT_ROWS",
    "SERIES_ROUTES",
    "TAG_ROWS",
    "Grid",
    "Rows",
    "aggregate",
    "api_totals",
    "baseline_window",
    "bucket_step",
    "client_totals",
    "dashboard_data",
    "empty_dashboard",
    "json_safe",
    "tag_totals",
]

DEFAULT_MAX_ROWS = 5_000  # rows read per window; ~0.2 s on this project's 2-core machine
RECENT_ROWS = 25
# tags are the clients' to choose (up to ten a request, each new one a row): the page
# shows the costliest; `tag_count` says how many the window has
TAG_ROWS = 50
SERIES_ROUTES = 6  # routes drawn on their own in the request chart; the rest are "other"
_TARGET_BUCKETS = 60
_STEPS_S = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


@dataclass(frozen=True, slots=True)
class Rows:
    """One window as read: `decisions` are the newest `len(decisions)` of the
    `in_window` the log holds between the window's bounds; `buckets` the database's
    exact counts over all of them on the window's `Grid` (None: counted from
    `decisions`, which is exact only when they are all of the window's)."""

    decisions: Sequence[LoggedDecision]
    in_window: int
    feedback: Sequence[FeedbackRecord] = ()
    shadows: Sequence[ShadowRecord] = ()
    buckets: Sequence[DecisionBucket] | None = None
    clients: Sequence[ClientTotal] | None = None  # None: counted from `decisions`
    tags: Sequence[TagTotal] | None = None  # None: counted from `decisions`
    apis: Sequence[ApiTotal] | None = None  # None: counted from `decisions`


def bucket_step(span_s: float, target: int = _TARGET_BUCKETS) -> int:
    """The smallest round step (10 s … 1 day) that cuts `span_s` into at most `target`
    buckets; whole days beyond that."""
    for step in _STEPS_S:
        if span_s / step <= target:
            return step
    return 86400 * math.ceil(span_s / (86400 * target))


@dataclass(frozen=True, slots=True)
class Grid:
    """The time buckets of a window: `count` buckets of `step` seconds from `start`
    (a multiple of `step`, so the edges are round clock times)."""

    start: float
    step: int
    count: int

    @classmethod
    def of(cls, window: Window) -> Grid:
        step = bucket_step(window.end - window.since)
        start = math.floor(window.since / step) * step
        return cls(float(start), step, max(1, math.ceil((window.end - start) / step)))

    def times(self) -> list[float]:
        return [self.start + i * self.step for i in range(self.count)]


def baseline_window(window: Window) -> Window:
    """The window of the same length that ends where `window` starts."""
    span = window.end - window.since
    return Window(since=window.since - span, until=window.since, text=f"previous {window.text}")


def aggregate(decisions: Sequence[LoggedDecision], grid: Grid) -> list[DecisionBucket]:
    """What `Store.decision_buckets` counts in SQL, computed from rows in memory: the
    reference the stores are tested against, and the counts when no store is at hand."""
    groups: dict[tuple[int, str, str], list[LoggedDecision]] = defaultdict(list)
    for d in decisions:
        groups[(math.floor((d.ts - grid.start) / grid.step), d.route, d.model)].append(d)
    return [
        DecisionBucket(
            bucket,
            route,
            model,
            len(rows),
            sum(map(is_error, rows)),
            sum(1 for d in rows if d.cache_hit),
            sum(map(is_fallback, rows)),
            math.fsum(d.cost_usd for d in rows if d.cost_usd is not None),
            sum(d.tokens_in or 0 for d in rows if d.cost_usd is None),
            sum(d.tokens_out or 0 for d in rows if d.cost_usd is None),
            sum(1 for d in rows if d.route_only),
            sum(1 for d in rows if d.unrouted),
        )
        for (bucket, route, model), rows in groups.items()
    ]


def _spender(
    registry: Registry | None,
) -> Callable[[DecisionBucket | ClientTotal | TagTotal | ApiTotal], float]:
    """What a group of decisions cost: its logged costs, plus the tokens of those without
    one at the model's registry price."""
    prices = {name: m.price for name, m in registry.models.items()} if registry else {}

    def spend(group: DecisionBucket | ClientTotal | TagTotal | ApiTotal) -> float:
        price = prices.get(group.model)
        if price is None:
            return group.cost_usd
        return (
            group.cost_usd + (group.tokens_in * price.input + group.tokens_out * price.output) / 1e6
        )

    return spend


def client_totals(decisions: Sequence[LoggedDecision]) -> list[ClientTotal]:
    """What `Store.client_totals` counts in SQL, from rows in memory (the reference)."""
    return [ClientTotal(*row) for row in _totals((d.client, d) for d in decisions)]


def api_totals(decisions: Sequence[LoggedDecision]) -> list[ApiTotal]:
    """What `Store.api_totals` counts in SQL, from rows in memory (the reference)."""
    return [ApiTotal(*row) for row in _totals((d.api, d) for d in decisions)]


def tag_totals(decisions: Sequence[LoggedDecision]) -> list[TagTotal]:
    """What `Store.tag_totals` counts in SQL, from rows in memory (the reference)."""
    named = ((tag, d) for d in decisions for tag in d.tags or (None,))
    return [TagTotal(*row) for row in _totals(named)]


def _totals(
    named: Iterable[tuple[str | None, LoggedDecision]],
) -> list[tuple[str | None, str, int, int, float, int, int, int]]:
    """Per (name, model): requests, errors, logged cost, the tokens of the rows
    without a cost (priced afterwards), and the ``/v1/route`` decisions."""
    groups: dict[tuple[str | None, str], list[LoggedDecision]] = defaultdict(list)
    for name, d in named:
        groups[(name, d.model)].append(d)
    return [
        (
            name,
            model,
            len(rows),
            sum(map(is_error, rows)),
            math.fsum(d.cost_usd for d in rows if d.cost_usd is not None),
            sum(d.tokens_in or 0 for d in rows if d.cost_usd is None),
            sum(d.tokens_out or 0 for d in rows if d.cost_usd is None),
            sum(1 for d in rows if d.route_only),
        )
        for (name, model), rows in groups.items()
    ]


def _clients(totals: Sequence[ClientTotal], registry: Registry | None) -> list[dict[str, Any]]:
    """Requests, errors and spend per gateway client key (empty when no request came
    with a key)."""
    n = sum(t.requests for t in totals)
    return _spend_rows([(t.client, t) for t in totals], "(no key)", n, registry)


def _tags(totals: Sequence[TagTotal], n: int, registry: Registry | None) -> list[dict[str, Any]]:
    """Requests, errors and spend per tag (empty when no request had one); `share` is of
    the window's `n` requests, so a request with two tags makes the shares sum past 1."""
    return _spend_rows([(t.tag, t) for t in totals], UNTAGGED, n, registry)


def _apis(totals: Sequence[ApiTotal], registry: Registry | None) -> list[dict[str, Any]]:
    """Requests, errors and spend per API the requests came by (empty when none came
    by the gateway)."""
    n = sum(t.requests for t in totals)
    return _spend_rows([(t.api, t) for t in totals], NO_API, n, registry)


def _spend_rows(
    named: Sequence[tuple[str | None, ClientTotal | TagTotal | ApiTotal]],
    unnamed: str,
    n: int,
    registry: Registry | None,
) -> list[dict[str, Any]]:
    """One row per name (None counted as `unnamed`), costliest first."""
    if all(name is None for name, _ in named):
        return []
    spend_of = _spender(registry)
    per: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0])
    for name, t in named:
        row = per[unnamed if name is None else name]
        row[0] += t.requests
        row[1] += t.errors
        row[2] += spend_of(t)
        row[3] += t.route_only
    return [
        {
            "name": name,
            "n": int(requests),
            "share": _rate(int(requests), n),
            "error_rate": of_dispatched(int(errors), int(requests), int(route_only)),
            "spend_usd": spend,
        }
        for name, (requests, errors, spend, route_only) in sorted(
            per.items(), key=lambda kv: -kv[1][2]
        )
    ]


def _median(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(slots=True)
class _Counts:
    """Exact counts of one group (the window, a route, a model) from the buckets."""

    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    fallbacks: int = 0
    spend_usd: float = 0.0
    route_only: int = 0
    unrouted: int = 0

    def add(self, b: DecisionBucket, spend: float) -> None:
        self.requests += b.requests
        self.errors += b.errors
        self.cache_hits += b.cache_hits
        self.fallbacks += b.fallbacks
        self.spend_usd += spend
        self.route_only += b.route_only
        self.unrouted += b.unrouted

    @property
    def error_rate(self) -> float | None:
        return of_dispatched(self.errors, self.requests, self.route_only)

    @property
    def fallback_rate(self) -> float | None:
        return of_routed(self.fallbacks, self.requests, self.route_only, self.unrouted)

    @property
    def cache_hit_rate(self) -> float | None:
        return of_routed(self.cache_hits, self.requests, self.route_only, self.unrouted)

    def to_dict(self, total: int) -> dict[str, Any]:
        return {
            "n": self.requests,
            "share": _rate(self.requests, total),
            "error_rate": self.error_rate,
            "fallback_rate": self.fallback_rate,
            "cache_hits": self.cache_hits,
            "spend_usd": self.spend_usd,
        }


@dataclass
class _Tally:
    """The buckets folded into per-bucket series and per-route / per-model counts."""

    grid: Grid
    total: _Counts
    routes: dict[str, _Counts]
    models: dict[str, _Counts]
    series: dict[str, Any]


def _tally(buckets: Sequence[DecisionBucket], grid: Grid, registry: Registry | None) -> _Tally:
    spend_of = _spender(registry)
    n = grid.count
    requests, errors, cache_hits = [0] * n, [0] * n, [0] * n
    spend = [0.0] * n
    per_route: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    total = _Counts()
    routes: defaultdict[str, _Counts] = defaultdict(_Counts)
    models: defaultdict[str, _Counts] = defaultdict(_Counts)
    for b in buckets:
        i = min(max(b.bucket, 0), n - 1)
        cost = spend_of(b)
        requests[i] += b.requests
        errors[i] += b.errors
        cache_hits[i] += b.cache_hits
        spend[i] += cost
        per_route[b.route][i] += b.requests
        for counts in (total, routes[b.route], models[b.model]):
            counts.add(b, cost)
    ranked = sorted(routes, key=lambda r: (-routes[r].requests, r))
    shown = {name: per_route[name] for name in ranked[:SERIES_ROUTES]}
    rest = [sum(per_route[r][i] for r in ranked[SERIES_ROUTES:]) for i in range(n)]
    if any(rest):
        shown["other"] = rest
    series = {
        "step_s": grid.step,
        "t": grid.times(),
        "requests": requests,
        "errors": errors,
        "cache_hits": cache_hits,
        "cost_usd": spend,
        "routes": shown,
    }
    return _Tally(grid, total, dict(routes), dict(models), series)


def _latency_series(decisions: Sequence[LoggedDecision], grid: Grid) -> dict[str, list[Any]]:
    """p50 and p99 per bucket, from the rows read (None where a bucket has none);
    ``/v1/route`` decisions dispatched nothing and are left out."""
    none: list[float | None] = [None] * grid.count
    decisions = [d for d in decisions if not d.route_only]
    if not decisions:
        return {"p50_ms": none, "p99_ms": list(none)}
    ts = np.fromiter((d.ts for d in decisions), dtype=np.float64, count=len(decisions))
    index = np.clip(((ts - grid.start) // grid.step).astype(np.int64), 0, grid.count - 1)
    latency = np.fromiter((d.latency_ms for d in decisions), np.float64, len(decisions))
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(grid.count + 1))
    p50, p99 = list(none), list(none)
    for i in range(grid.count):
        chunk = latency[order[bounds[i] : bounds[i + 1]]]
        if chunk.size:
            p50[i], p99[i] = (float(v) for v in np.percentile(chunk, [50, 99]))
    return {"p50_ms": p50, "p99_ms": p99}


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
            "route_only": d.route_only,
        }
        for d in reversed(decisions[-RECENT_ROWS:])
    ]


def _sample(rows: int, in_window: int, max_rows: int) -> dict[str, Any]:
    return {
        "rows": rows,
        "in_window": in_window,
        "truncated": in_window > rows,
        "max_rows": max_rows,
    }


def empty_dashboard(
    window: Window, *, url: str | None, message: str, max_rows: int = DEFAULT_MAX_ROWS
) -> dict[str, Any]:
    """The payload when there is nothing to show (log off, empty, not migrated)."""
    grid = Grid.of(window)
    series = _tally((), grid, None).series | _latency_series((), grid)
    return {
        "window": window.to_dict(),
        "log": {"enabled": url is not None, "url": url, "message": message},
        "sample": _sample(0, 0, max_rows),
        "summary": None,
        "series": series,
        "routes": [],
        "models": [],
        "clients": [],
        "tags": [],
        "tag_count": 0,
        "layers": [],
        "apis": [],
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
    """The dashboard payload for `window` (fields: docs/telemetry.md#dashboard).

    Counts, error / fallback / cache-hit rates and spend come from `current.buckets`,
    exact over the whole window; latency percentiles, margins, savings, drift, layers
    and the newest decisions from the rows read (`sample` says whether they were all
    of the window's). `previous` is the `baseline_window`, for drift."""
    grid = Grid.of(window)
    decisions = current.decisions
    buckets = current.buckets if current.buckets is not None else aggregate(decisions, grid)
    tally = _tally(buckets, grid, registry)
    n = tally.total.requests
    if not n:
        return empty_dashboard(
            window, url=url, message=f"no decisions in the last {window.text}", max_rows=max_rows
        )
    report = build_report(
        decisions, registry, feedback=current.feedback, shadows=current.shadows, breakdowns=False
    )
    tags = _tags(
        current.tags if current.tags is not None else tag_totals(decisions),
        current.in_window,
        registry,
    )
    drift_settings = registry.drift if registry is not None else DriftSettings()
    drift = drift_report(previous.decisions, decisions, drift_settings)
    routed = routed_only(decisions)  # margins, confidence, layers: embeddings' and rerank's none
    drift_of = {r.route: r for r in drift.routes}
    shadow_of = {s.route: s for s in report.shadow.routes}
    feedback_of = {f.route: f for f in report.feedback}
    sampled_routes = {g.name: g for g in report.routes}
    sampled_models = {g.name: g for g in report.models}
    extras = _route_extras(routed)
    total = report.total
    margins = [d.margin for d in routed if d.margin is not None]

    routes = []
    for name, counts in sorted(tally.routes.items(), key=lambda kv: (-kv[1].requests, kv[0])):
        group = sampled_routes.get(name)
        route_drift = drift_of.get(name)
        shadow = shadow_of.get(name)
        feedback = feedback_of.get(name)
        routes.append(
            {
                "name": name,
                **counts.to_dict(n),
                "escalation_rate": group.escalation_rate if group else None,
                "p50_ms": group.p50_ms if group else None,
                "p99_ms": group.p99_ms if group else None,
                "cost_usd": group.cost_usd if group else None,
                "savings": group.savings if group else None,
                "median_margin": extras.get(name, {}).get("median_margin"),
                "mean_confidence": extras.get(name, {}).get("mean_confidence"),
                "drift": route_drift.status if route_drift is not None else None,
                "drift_reasons": list(route_drift.reasons) if route_drift is not None else [],
                "shadow_lost_share": shadow.lost_share if shadow is not None else None,
                "feedback_mean_score": feedback.mean_score if feedback is not None else None,
                "thumbs_up_share": feedback.thumbs_up_share if feedback is not None else None,
            }
        )
    models = []
    for name, counts in sorted(tally.models.items(), key=lambda kv: (-kv[1].requests, kv[0])):
        group = sampled_models.get(name)
        models.append(
            {
                "name": name,
                **counts.to_dict(n),
                "p50_ms": group.p50_ms if group else None,
                "p99_ms": group.p99_ms if group else None,
            }
        )
    layers = Counter(d.layer for d in routed)
    span = max(window.end - window.since, 1e-9)
    payload: dict[str, Any] = json_safe(
        {
            "window": window.to_dict(),
            "log": {"enabled": True, "url": url, "message": None},
            "sample": _sample(len(decisions), n, max_rows),
            "summary": {
                "requests": n,
                "rate_per_s": n / span,
                "error_rate": tally.total.error_rate,
                "fallback_rate": tally.total.fallback_rate,
                "cache_hit_rate": tally.total.cache_hit_rate,
                "spend_usd": tally.total.spend_usd,
                "escalation_rate": total.escalation_rate,
                "default_rate": _rate(sum(map(is_default, routed)), len(routed)),
                "p50_ms": total.p50_ms,
                "p99_ms": total.p99_ms,
                "cost_usd": total.cost_usd,
                "counterfactual_usd": total.counterfactual_usd,
                "savings": total.savings,
                "strongest_model": report.strongest,
                "median_margin": _median(margins),
                "mean_confidence": _mean([d.confidence for d in routed]),
                "unpriced": total.unpriced,
                "route_only": total.route_only,  # of the rows read
            },
            "series": tally.series | _latency_series(decisions, grid),
            "routes": routes,
            "models": models,
            "clients": _clients(
                current.clients if current.clients is not None else client_totals(decisions),
                registry,
            ),
            "tags": tags[:TAG_ROWS],
            "tag_count": sum(t["name"] != UNTAGGED for t in tags),  # not `(untagged)`
            "layers": [
                {"name": name, "n": count, "share": count / len(routed)}
                for name, count in sorted(layers.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "apis": _apis(
                current.apis if current.apis is not None else api_totals(decisions), registry
            ),
            "drift": {
                "baseline": baseline_window(window).to_dict(),
                "baseline_sample": _sample(len(previous.decisions), previous.in_window, max_rows),
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
