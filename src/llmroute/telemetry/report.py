"""`llmroute report`: what routing did over a window of the decision log.

Route mix, and the same per model and per deciding layer (rules, intent, default,
difficulty, the LLM router, affinity ...; per API the requests came by (chat, messages,
responses, completions); and, when requests came with gateway client keys, tags or end
users, per key, per tag and for the end users who cost the most); cost
against always calling the strongest model (the registry's most expensive chat model
by input + output price per million tokens: the counterfactual prices each request's
logged tokens at that model, one tier's share of them for a cascade that escalated);
fallback rate (requests that went on to another model after a failed
attempt, answered or not: one that failed down its whole chain fell back, one that
failed on its only model did not) and
escalation rate (attempts that are a cascade tier passed over); p50/p99 latency per
route and per model; error rate; user feedback and shadow quality per route.

The rates are of the requests that could have done what they count (`error_rate`,
`fallback_rate`, the dashboard's too): errors of the requests dispatched (not
``/v1/route`` decisions, which call no model), fallbacks and escalations of the routed
requests dispatched (nor embeddings and rerank, which no route or cascade serves).

A request's cost is its logged `cost_usd`, else its tokens priced at its model's
registry price; requests without token counts are left out of both cost columns (so
the savings compare like with like) and counted in `unpriced`; cache hits, logged
without them (no model called), are counted apart (`CacheStats`). Decisions asked for
through ``/v1/route`` (`route_only`) count in the route mix and its shares, but not in
latency, cost or the rates: nothing was dispatched. Embeddings and rerank requests
(`unrouted`) count in requests, errors, latency and cost, under their own routes
``(embeddings)`` and ``(rerank)``, but not in the deciding layers, the fallback and
escalation rates, the counterfactual or the savings: no routing chose their model.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmroute.registry.schema import Price, Registry
from llmroute.telemetry.drift import routed_only
from llmroute.telemetry.record import (
    CLIENT_DISCONNECTED,
    ESCALATED,
    FeedbackRecord,
    LoggedDecision,
    ShadowRecord,
    escalations,
)
from llmroute.telemetry.shadow_report import ShadowReport, shadow_report

__all__ = [
    "ESCALATED",
    "TOP_TAGS",
    "TOP_USERS",
    "UNTAGGED",
    "CacheStats",
    "FeedbackStats",
    "GroupStats",
    "Report",
    "build_report",
    "cost_function",
    "is_error",
    "is_fallback",
    "of_dispatched",
    "of_routed",
    "strongest_model",
]

TOP_USERS = 20  # end users listed, by cost then requests
TOP_TAGS = 50  # tags listed, by cost then requests: clients choose them, up to ten a request
NO_API = "(none)"  # the API group of rows without one: the SDK's, /v1/route, older rows
UNTAGGED = "(untagged)"


def strongest_model(registry: Registry) -> tuple[str, Price] | None:
    """The most expensive chat model (input + output price; ties by name), or None when
    no chat model has a price."""
    priced = [
        (m.price.input + m.price.output, name, m.price)
        for name, m in registry.models.items()
        if m.kind == "chat" and (m.price.input > 0 or m.price.output > 0)
    ]
    if not priced:
        return None
    _, name, price = max(priced, key=lambda item: (item[0], item[1]))
    return name, price


def _priced(d: LoggedDecision, price: Price, *, calls: int = 1) -> float | None:
    """`d`'s tokens at `price`; with `calls`, one call's share of them."""
    if d.tokens_in is None and d.tokens_out is None:
        return None
    return ((d.tokens_in or 0) * price.input + (d.tokens_out or 0) * price.output) / 1e6 / calls


def _counterfactual(d: LoggedDecision, strongest: Price) -> float | None:
    """`d` sent once to the strongest model. A cascade that escalated logs the tokens of
    every tier it paid for, each sent the same request: one call's share of them is the
    estimate, not their sum (which would count the prompt once a tier and credit the
    cascade with savings it did not make)."""
    calls = escalations(d.attempts) + (d.served_model is not None)
    return _priced(d, strongest, calls=max(1, calls))


def is_error(d: LoggedDecision) -> bool:
    """A failure of the gateway or its models. A client that hung up (status 499, or a
    stream it stopped reading) is not one: that was its choice, and
    ``llmroute_requests_total{status="499"}`` counts it."""
    if d.error == CLIENT_DISCONNECTED:
        return False
    return d.status >= 400 or d.error is not None


def is_fallback(d: LoggedDecision) -> bool:
    """Went on to another model after a failed attempt (or a cascade tier passed over),
    whether or not that model answered. A failed request's attempt path lists every
    model it tried, the last one's failure included, and an answered one's the models
    before the one that answered; a stream that failed on its own model after its 200
    lists that model too. So: a path of two entries or more (a request that failed down
    its whole fallback chain fell back, and is an error too), or of one that does not
    name the model that answered. One that failed on its only model did not fall back
    (an error alone)."""
    attempts = d.attempts
    if len(attempts) != 1:
        return len(attempts) >= 2
    served = d.served_model
    return served is not None and not _names(attempts[0], served)


def _names(attempt: str, model: str) -> bool:
    """Whether `attempt` (``MODEL via PROVIDER (...)``, ``MODEL (...)``, ``MODEL
    escalated: ...``) is one of `model`'s."""
    return attempt.startswith(model) and attempt[len(model) : len(model) + 1] == " "


def is_escalation(d: LoggedDecision) -> bool:
    return escalations(d.attempts) > 0


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def _rate(count: int, n: int) -> float | None:
    return count / n if n else None


def of_dispatched(count: int, n: int, route_only: int) -> float | None:
    """`count` (errors) of the dispatched of `n` requests: a ``/v1/route`` decision
    called no model, so it cannot fail (None when nothing was dispatched)."""
    return _rate(count, n - route_only)


def of_routed(count: int, n: int, route_only: int, unrouted: int) -> float | None:
    """`count` (fallbacks, escalations, cache hits) of the routed requests dispatched of
    `n`: neither ``/v1/route`` decisions nor embeddings and rerank (which no route,
    cascade or response cache serves) can have one; counted in, ten embeddings a chat
    showed a tenth of the rate."""
    return _rate(count, n - route_only - unrouted)


@dataclass(frozen=True, slots=True)
class GroupStats:
    """The requests of one route or one model."""

    name: str
    n: int
    share: float
    errors: int
    fallbacks: int
    escalations: int
    cache_hits: int
    p50_ms: float | None
    p99_ms: float | None
    cost_usd: float  # over the priced requests
    counterfactual_usd: float | None  # the same requests on the strongest model
    unpriced: int
    route_only: int = 0  # /v1/route decisions: counted in n, not in latency or cost
    unrouted: int = 0  # embeddings and rerank requests: in n and cost, not the savings
    unrouted_usd: float = 0.0  # their part of cost_usd

    @property
    def error_rate(self) -> float | None:
        return of_dispatched(self.errors, self.n, self.route_only)

    @property
    def fallback_rate(self) -> float | None:
        return of_routed(self.fallbacks, self.n, self.route_only, self.unrouted)

    @property
    def escalation_rate(self) -> float | None:
        """Of the routed requests dispatched, as the fallback rate (a group of embeddings
        alone: None)."""
        return of_routed(self.escalations, self.n, self.route_only, self.unrouted)

    @property
    def savings(self) -> float | None:
        """What routing saved against the counterfactual: over the routed requests."""
        if not self.counterfactual_usd:
            return None
        return 1.0 - (self.cost_usd - self.unrouted_usd) / self.counterfactual_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "share": self.share,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "fallbacks": self.fallbacks,
            "fallback_rate": self.fallback_rate,
            "escalations": self.escalations,
            "escalation_rate": self.escalation_rate,
            "cache_hits": self.cache_hits,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "cost_usd": self.cost_usd,
            "counterfactual_usd": self.counterfactual_usd,
            "savings": self.savings,
            "unpriced": self.unpriced,
            "route_only": self.route_only,
            "unrouted": self.unrouted,
            "unrouted_usd": self.unrouted_usd,
        }


@dataclass(frozen=True, slots=True)
class FeedbackStats:
    route: str
    n: int  # feedback records
    scores: int
    mean_score: float | None
    thumbs: int
    thumbs_up_share: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "n": self.n,
            "scores": self.scores,
            "mean_score": self.mean_score,
            "thumbs": self.thumbs,
            "thumbs_up_share": self.thumbs_up_share,
        }


@dataclass(frozen=True, slots=True)
class CacheStats:
    """The window's cache hits: logged without tokens or cost (no model was called), so
    in no cost column nor the savings. `priced` of them have a prompt (its hash) the same
    model answered in the window, not from the cache; `not_spent_usd` sums that answer's
    cost for each: what calling the model again would have cost."""

    hits: int
    priced: int
    not_spent_usd: float

    def to_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "priced": self.priced, "not_spent_usd": self.not_spent_usd}


def _cache_stats(
    decisions: Sequence[LoggedDecision], cost_of: Callable[[LoggedDecision], float | None]
) -> CacheStats:
    """`CacheStats` of `decisions`: each hit priced at the latest answer of its prompt by
    its model in the window that was no hit (a semantic hit's prompt differs, and an
    answer before the window is not there to read: those are counted, not priced)."""
    hits = [d for d in decisions if d.cache_hit]
    if not hits:  # no sort nor pass over the window for none (the dashboard's rows)
        return CacheStats(0, 0, 0.0)
    wanted = {(d.prompt_hash, d.model) for d in hits if d.prompt_hash is not None}
    # the latest priced answer of each prompt and model a hit asks for: one pass, no sort
    # (a sort of 10^5 decisions, and a price for each, took a report 1.5 times as long)
    paid: dict[tuple[str, str], tuple[float, float]] = {}
    for d in decisions:
        if d.cache_hit or d.route_only or d.status != 200 or d.prompt_hash is None:
            continue
        key = (d.prompt_hash, d.model)
        if key not in wanted:
            continue
        last = paid.get(key)
        if last is not None and last[0] > d.ts:
            continue
        cost = cost_of(d)
        if cost is not None:
            paid[key] = (d.ts, cost)
    priced = 0
    usd = 0.0
    for d in hits:
        found = paid.get((d.prompt_hash, d.model)) if d.prompt_hash is not None else None
        if found is not None:
            priced += 1
            usd += found[1]
    return CacheStats(len(hits), priced, usd)


@dataclass(frozen=True, slots=True)
class Report:
    strongest: str | None
    total: GroupStats
    routes: list[GroupStats]
    models: list[GroupStats]
    feedback: list[FeedbackStats]
    feedback_unmatched: int  # feedback on decisions outside the window
    shadow: ShadowReport
    clients: list[GroupStats] = field(default_factory=list)  # per gateway client key
    tags: list[GroupStats] = field(default_factory=list)  # per x-llmroute-tags tag
    tag_count: int = 0  # distinct tags in the window, not `(untagged)` (`tags`: the top ones)
    users: list[GroupStats] = field(default_factory=list)  # the costliest end users
    user_count: int = 0  # distinct end users in the window (`users` holds the top ones)
    layers: list[GroupStats] = field(default_factory=list)  # per deciding layer
    apis: list[GroupStats] = field(default_factory=list)  # per API the requests came by
    cache: CacheStats = CacheStats(0, 0, 0.0)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.total.n == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "strongest_model": self.strongest,
            "total": self.total.to_dict(),
            "routes": [r.to_dict() for r in self.routes],
            "models": [m.to_dict() for m in self.models],
            "layers": [g.to_dict() for g in self.layers],
            "feedback": [f.to_dict() for f in self.feedback],
            "feedback_unmatched": self.feedback_unmatched,
            "shadow": self.shadow.to_dict(),
            "clients": [c.to_dict() for c in self.clients],
            "tags": [t.to_dict() for t in self.tags],
            "tag_count": self.tag_count,
            "apis": [a.to_dict() for a in self.apis],
            "users": [u.to_dict() for u in self.users],
            "user_count": self.user_count,
            "cache": self.cache.to_dict(),
            **self.extra,
        }


def _group(
    name: str,
    decisions: Sequence[LoggedDecision],
    total: int,
    cost_of: Callable[[LoggedDecision], float | None],
    strongest: Price | None,
) -> GroupStats:
    cost = counterfactual = unrouted_usd = 0.0
    unpriced = route_only = unrouted = 0
    latencies = []
    for d in decisions:
        if d.route_only:  # nothing dispatched: no cost, and only the decision's time
            route_only += 1
            continue
        latencies.append(d.latency_ms)
        actual = cost_of(d)
        if d.unrouted:  # its model was asked for: spend, but no counterfactual
            unrouted += 1
            if actual is None:
                unpriced += 1
            else:
                cost += actual
                unrouted_usd += actual
            continue
        if d.cache_hit and actual is None:  # no model called: `CacheStats`, not unpriced
            continue
        reference = _counterfactual(d, strongest) if strongest is not None else None
        if actual is None or (strongest is not None and reference is None):
            unpriced += 1
            continue
        cost += actual
        counterfactual += reference or 0.0
    return GroupStats(
        name=name,
        n=len(decisions),
        share=len(decisions) / total if total else 0.0,
        errors=sum(map(is_error, decisions)),
        fallbacks=sum(map(is_fallback, decisions)),
        escalations=sum(map(is_escalation, decisions)),
        cache_hits=sum(1 for d in decisions if d.cache_hit),
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
        cost_usd=cost,
        # none for a group of unrouted requests alone: nothing to compare
        counterfactual_usd=(
            counterfactual if strongest is not None and unrouted < len(decisions) else None
        ),
        unpriced=unpriced,
        route_only=route_only,
        unrouted=unrouted,
        unrouted_usd=unrouted_usd,
    )


def cost_function(registry: Registry | None) -> Callable[[LoggedDecision], float | None]:
    """A request's cost: its logged `cost_usd`, else its tokens at its model's registry
    price, else None."""
    prices = {name: m.price for name, m in registry.models.items()} if registry else {}

    def cost_of(d: LoggedDecision) -> float | None:
        if d.cost_usd is not None:
            return d.cost_usd
        # tokens are priced at the model that answered them (a fallback's price)
        price = prices.get(d.served_model or d.model)
        return _priced(d, price) if price is not None else None

    return cost_of


def _grouped(
    decisions: Iterable[LoggedDecision], key: Callable[[LoggedDecision], str]
) -> dict[str, list[LoggedDecision]]:
    groups: dict[str, list[LoggedDecision]] = defaultdict(list)
    for d in decisions:
        groups[key(d)].append(d)
    return dict(sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])))


def _feedback(
    decisions: Sequence[LoggedDecision], feedback: Sequence[FeedbackRecord]
) -> tuple[list[FeedbackStats], int]:
    route_of = {d.id: d.route for d in decisions}
    per_route: dict[str, list[FeedbackRecord]] = defaultdict(list)
    unmatched = 0
    for f in feedback:
        route = route_of.get(f.decision_id)
        if route is None:
            unmatched += 1
        else:
            per_route[route].append(f)
    stats = []
    for route in sorted(per_route):
        records = per_route[route]
        scores = [f.score for f in records if f.score is not None]
        thumbs = [f.thumbs for f in records if f.thumbs is not None]
        stats.append(
            FeedbackStats(
                route=route,
                n=len(records),
                scores=len(scores),
                mean_score=float(np.mean(scores)) if scores else None,
                thumbs=len(thumbs),
                thumbs_up_share=_rate(thumbs.count("up"), len(thumbs)),
            )
        )
    return stats, unmatched


def build_report(
    decisions: Sequence[LoggedDecision],
    registry: Registry | None,
    *,
    feedback: Sequence[FeedbackRecord] = (),
    shadows: Sequence[ShadowRecord] = (),
    breakdowns: bool = True,
) -> Report:
    """The report over one window (see the module docstring). Without `breakdowns`
    the groups per client key, tag, API and end user are left empty: the dashboard
    counts those in the database, and tags and end users, which clients choose, can
    number one or more per request (a group's percentiles each)."""
    strongest = strongest_model(registry) if registry is not None else None
    reference = strongest[1] if strongest is not None else None
    cost_of = cost_function(registry)
    n = len(decisions)
    routes = [
        _group(name, group, n, cost_of, reference)
        for name, group in _grouped(decisions, lambda d: d.route).items()
    ]
    models = [
        _group(name, group, n, cost_of, reference)
        for name, group in _grouped(decisions, lambda d: d.model).items()
    ]
    routed = routed_only(decisions)  # no layer decided an embeddings or rerank request
    layers = [
        _group(name, group, len(routed), cost_of, reference)
        for name, group in _grouped(routed, lambda d: d.layer).items()
    ]
    clients = []
    if breakdowns and any(d.client is not None for d in decisions):
        clients = [
            _group(name, group, n, cost_of, reference)
            for name, group in _grouped(decisions, lambda d: d.client or "(no key)").items()
        ]
    by_tag = _by_tag(decisions) if breakdowns else {}
    tags = [
        _group(name, by_tag[name], n, cost_of, reference)
        for name in _costliest(by_tag, TOP_TAGS, cost_of)
    ]
    tags.sort(key=lambda g: (-g.cost_usd, -g.n, g.name))
    apis = []
    if breakdowns and any(d.api is not None for d in decisions):
        apis = [
            _group(name, group, n, cost_of, reference)
            for name, group in _grouped(decisions, lambda d: d.api or NO_API).items()
        ]
    by_user = _grouped(
        (d for d in decisions if breakdowns and d.end_user is not None),
        lambda d: d.end_user or "",
    )
    users = [
        _group(name, by_user[name], n, cost_of, reference)
        for name in _costliest(by_user, TOP_USERS, cost_of)
    ]
    users.sort(key=lambda g: (-g.cost_usd, -g.n, g.name))
    feedback_stats, unmatched = _feedback(decisions, feedback)
    return Report(
        strongest=strongest[0] if strongest is not None else None,
        total=_group("(all)", decisions, n, cost_of, reference),
        routes=routes,
        models=models,
        feedback=feedback_stats,
        feedback_unmatched=unmatched,
        shadow=shadow_report(shadows),
        clients=clients,
        tags=tags,
        tag_count=len(by_tag) - (UNTAGGED in by_tag),  # tags, not the untagged requests
        users=users,
        user_count=len(by_user),
        layers=layers,
        apis=apis,
        cache=_cache_stats(decisions, cost_of),
    )


def _costliest(
    groups: Mapping[str, Sequence[LoggedDecision]],
    top: int,
    cost_of: Callable[[LoggedDecision], float | None],
) -> list[str]:
    """The names of (at most) the `top` groups that cost the most, then by requests.

    Ranked on their summed cost alone, so that only those listed get their statistics
    (percentiles each): clients choose tags and end users, one or more a request, and a
    window of one-off names cost a group each."""
    if len(groups) <= top:
        return list(groups)
    spent = {name: sum(_cost(d, cost_of) for d in group) for name, group in groups.items()}
    return heapq.nsmallest(top, groups, key=lambda name: (-spent[name], -len(groups[name]), name))


def _cost(d: LoggedDecision, cost_of: Callable[[LoggedDecision], float | None]) -> float:
    """What `d` cost, as `_group` sums it (nothing for a decision only, or unpriced)."""
    return 0.0 if d.route_only else cost_of(d) or 0.0


def _by_tag(decisions: Sequence[LoggedDecision]) -> dict[str, list[LoggedDecision]]:
    """Each tag's requests (a request with two tags counts in both), and the untagged
    ones apart; nothing when no request had a tag."""
    if not any(d.tags for d in decisions):
        return {}
    groups: dict[str, list[LoggedDecision]] = defaultdict(list)
    for d in decisions:
        for tag in d.tags or (UNTAGGED,):
            groups[tag].append(d)
    return dict(sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])))
