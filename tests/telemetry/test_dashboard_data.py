"""The dashboard's payload over synthetic decision-log rows (no server)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from log_factory import logged

from llmroute.registry import parse_registry
from llmroute.telemetry.dashboard import (
    SERIES_ROUTES,
    TAG_ROWS,
    Grid,
    Rows,
    aggregate,
    baseline_window,
    bucket_step,
    client_totals,
    dashboard_data,
    empty_dashboard,
    tag_totals,
)
from llmroute.telemetry.record import FeedbackRecord, ShadowRecord
from llmroute.telemetry.report import build_report
from llmroute.telemetry.windows import parse_window

REGISTRY = parse_registry(
    """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:8001/v1"}
models:
  small: {provider: local, model: s, price: {input: 1, output: 2}}
  large: {provider: local, model: l, price: {input: 10, output: 30}}
routes:
  - {name: code, target: large, examples: [write code]}
  - {name: chat, target: small, examples: [hello there]}
default: {target: small}
"""
).registry
NOW = 1_800_000_000.0
HOUR = parse_window("1h", now=NOW)


@pytest.mark.parametrize(
    ("span", "step"),
    [
        (900, 15),
        (3600, 60),
        (6 * 3600, 600),
        (86400, 1800),
        (7 * 86400, 10800),
        (90 * 86400, 172800),
    ],
)
def test_bucket_steps_are_round_and_give_at_most_sixty_buckets(span: float, step: int) -> None:
    assert bucket_step(span) == step
    assert span / step <= 60


def test_the_baseline_is_the_window_just_before() -> None:
    before = baseline_window(HOUR)
    assert (before.since, before.until) == (NOW - 7200, NOW - 3600)
    assert before.text == "previous 1h"


def _hour_of_traffic() -> list:
    rows = []
    for i in range(40):  # code: one every 60 s, margins around 0.5
        rows.append(
            logged(
                "code",
                ts=NOW - 3600 + 60 * i + 1,
                margin=0.5 + (i % 5) / 100,
                latency_ms=100.0 + i,
                tokens_in=1000,
                tokens_out=1000,
                model="small",
                prompt=f"secret prompt {i}",
            )
        )
    for i in range(10):
        rows.append(
            logged(
                "chat",
                ts=NOW - 1800 + 30 * i,
                model="large",
                cost_usd=0.01,
                cache_hit=i < 3,
                api="completions" if i < 4 else None,  # None: the SDK's
                status=502 if i == 9 else 200,
                error="upstream_error" if i == 9 else None,
                attempts=("large: 503",) if i in (8, 9) else (),
                served_model=None if i == 9 else "large",  # 9 failed on every model
            )
        )
    rows += [logged("default", ts=NOW - 600 + i, margin=None, model="small") for i in range(5)]
    return sorted(rows, key=lambda d: d.ts)


def test_payload_summarises_the_window() -> None:
    rows = _hour_of_traffic()
    previous = [logged("code", ts=NOW - 5000 + i, margin=0.9) for i in range(40)]
    feedback = [FeedbackRecord(rows[0].id, NOW - 10, score=0.5, thumbs="up")]
    shadows = [
        ShadowRecord("x", NOW - 5, "chat", "large", "ref", None, None, routed_ok=False),
        ShadowRecord("y", NOW - 4, "chat", "large", "ref", None, None, routed_ok=True),
    ]
    data = dashboard_data(
        Rows(rows, len(rows), feedback, shadows),
        Rows(previous, len(previous)),
        REGISTRY,
        window=HOUR,
        url="sqlite:///x.db",
    )
    summary = data["summary"]
    assert summary["requests"] == 55
    assert summary["rate_per_s"] == pytest.approx(55 / 3600)
    assert summary["error_rate"] == pytest.approx(1 / 55)
    assert summary["cache_hit_rate"] == pytest.approx(3 / 55)
    assert summary["default_rate"] == pytest.approx(5 / 55)
    assert summary["fallback_rate"] == pytest.approx(1 / 55)
    assert data["sample"] == {"rows": 55, "in_window": 55, "truncated": False, "max_rows": 5000}

    series = data["series"]
    assert series["step_s"] == 60 and len(series["t"]) in (60, 61)
    assert sum(series["requests"]) == 55
    assert sum(series["errors"]) == 1 and sum(series["cache_hits"]) == 3
    assert sum(series["routes"]["code"]) == 40 and sum(series["routes"]["chat"]) == 10
    assert list(series["routes"])[:2] == ["code", "chat"]
    assert "other" not in series["routes"]
    assert sum(series["cost_usd"]) == pytest.approx(summary["spend_usd"])
    assert summary["spend_usd"] == pytest.approx(40 * 0.003 + 10 * 0.01)
    # cost and savings compare like with like: the chat rows have no tokens to reprice
    assert summary["cost_usd"] == pytest.approx(40 * 0.003) and summary["unpriced"] == 15
    assert summary["savings"] == pytest.approx(1 - 3 / 40)
    busy = [p for p in series["p50_ms"] if p is not None]
    assert busy and any(p is None for p in series["p50_ms"])  # empty buckets are gaps
    for key in ("requests", "errors", "cache_hits", "p50_ms", "p99_ms", "cost_usd"):
        assert len(series[key]) == len(series["t"])

    routes = {r["name"]: r for r in data["routes"]}
    assert [r["name"] for r in data["routes"]] == ["code", "chat", "default"]
    assert routes["code"]["median_margin"] == pytest.approx(0.52)
    assert routes["code"]["drift"] == "flagged"  # margins fell from 0.9 to about 0.5
    assert routes["code"]["drift_reasons"]
    assert routes["default"]["drift"] is None
    assert routes["chat"]["shadow_lost_share"] == pytest.approx(0.5)
    assert routes["code"]["feedback_mean_score"] == 0.5
    assert routes["code"]["thumbs_up_share"] == 1.0
    assert data["drift"]["flagged_routes"] == ["code"]
    assert data["drift"]["baseline"]["until"] == HOUR.since
    assert {m["name"] for m in data["models"]} == {"small", "large"}
    assert data["layers"][0] == {"name": "intent", "n": 50, "share": pytest.approx(50 / 55)}
    assert [(a["name"], a["n"]) for a in data["apis"]] == [("(none)", 51), ("completions", 4)]
    assert data["apis"][1]["share"] == pytest.approx(4 / 55)
    assert data["apis"][1]["spend_usd"] == pytest.approx(4 * 0.01)

    recent = data["recent"]
    assert len(recent) == 25 and recent[0]["ts"] >= recent[-1]["ts"]
    text = json.dumps(data, allow_nan=False)  # what Starlette sends; NaN would fail here
    assert "secret prompt" not in text and "prompt" not in recent[0]


def test_route_only_decisions_are_counted_but_not_timed() -> None:
    """A ``/v1/route`` decision is a request of the window (and shown as such in the
    recent table), but its decision-only latency stays out of the latency series."""
    rows = _hour_of_traffic()
    only = [
        logged("code", ts=NOW - 3600 + 60 * i + 2, latency_ms=0.1, route_only=True)
        for i in range(40)
    ]
    plain = dashboard_data(Rows(rows, len(rows)), Rows([], 0), REGISTRY, window=HOUR, url="x")
    mixed_rows = sorted(rows + only, key=lambda d: d.ts)
    data = dashboard_data(
        Rows(mixed_rows, len(mixed_rows)), Rows([], 0), REGISTRY, window=HOUR, url="x"
    )
    assert data["summary"]["requests"] == 95 and data["summary"]["route_only"] == 40
    assert data["series"]["p50_ms"] == plain["series"]["p50_ms"]
    assert data["summary"]["p50_ms"] == plain["summary"]["p50_ms"]
    assert data["summary"]["unpriced"] == plain["summary"]["unpriced"]
    assert sum(r["route_only"] for r in data["recent"]) > 0


def test_a_truncated_read_keeps_exact_counts_from_the_buckets() -> None:
    rows = _hour_of_traffic()
    grid = Grid.of(HOUR)
    newest = rows[-10:]  # what a read of at most 10 rows returns
    data = dashboard_data(
        Rows(newest, 55, buckets=aggregate(rows, grid)),
        Rows([], 0),
        REGISTRY,
        window=HOUR,
        url="u",
        max_rows=10,
    )
    assert data["sample"] == {"rows": 10, "in_window": 55, "truncated": True, "max_rows": 10}
    summary = data["summary"]
    assert summary["requests"] == 55 and summary["error_rate"] == pytest.approx(1 / 55)
    assert summary["cache_hit_rate"] == pytest.approx(3 / 55)
    assert summary["spend_usd"] == pytest.approx(40 * 0.003 + 10 * 0.01)
    series = data["series"]
    assert sum(series["requests"]) == 55  # the whole hour is drawn, not the newest rows
    assert series["requests"][1] == 1 and series["p50_ms"][1] is None  # counted, not read
    routes = {r["name"]: r for r in data["routes"]}
    assert routes["code"]["n"] == 40 and routes["code"]["p50_ms"] is not None
    assert routes["chat"]["n"] == 10 and routes["chat"]["p50_ms"] is None  # none read
    assert routes["chat"]["error_rate"] == pytest.approx(0.1)  # counted all the same
    assert routes["default"]["p50_ms"] == pytest.approx(100.0)
    assert len(data["recent"]) == 10


def test_spend_per_client_key_is_exact_and_absent_without_keys() -> None:
    rows = _hour_of_traffic()
    assert (
        dashboard_data(Rows(rows, 55), Rows([], 0), REGISTRY, window=HOUR, url="u")["clients"] == []
    )
    keyed = [dataclasses.replace(d, client="team-a" if d.route == "code" else None) for d in rows]
    data = dashboard_data(
        Rows(keyed[-5:], 55, clients=client_totals(keyed)),
        Rows([], 0),
        REGISTRY,
        window=HOUR,
        url="u",
    )
    clients = {c["name"]: c for c in data["clients"]}
    assert clients["team-a"]["n"] == 40 and clients["(no key)"]["n"] == 15
    assert clients["team-a"]["spend_usd"] == pytest.approx(40 * 0.003)
    assert clients["(no key)"]["error_rate"] == pytest.approx(1 / 15)


def test_spend_per_tag_counts_a_request_under_each_of_its_tags() -> None:
    rows = _hour_of_traffic()
    assert dashboard_data(Rows(rows, 55), Rows([], 0), REGISTRY, window=HOUR, url="u")["tags"] == []
    tagged = [
        dataclasses.replace(d, tags=("team:a", "app=web") if d.route == "code" else ())
        for d in rows
    ]
    data = dashboard_data(
        Rows(tagged[-5:], 55, tags=tag_totals(tagged)),
        Rows([], 0),
        REGISTRY,
        window=HOUR,
        url="u",
    )
    tags = {t["name"]: t for t in data["tags"]}
    assert set(tags) == {"team:a", "app=web", "(untagged)"}
    assert tags["team:a"]["n"] == tags["app=web"]["n"] == 40 and tags["(untagged)"]["n"] == 15
    assert tags["team:a"]["share"] == pytest.approx(40 / 55)
    assert tags["team:a"]["spend_usd"] == pytest.approx(40 * 0.003)
    assert data["tag_count"] == 2  # the tags, not the untagged requests' row


def test_the_tags_table_holds_the_costliest_tags_and_says_how_many_there_are() -> None:
    """Clients choose their tags, up to ten a request: a client sending new ones with
    each request made the payload one row per tag (50,000 rows, 3.9 MB and a 10 s build
    per refresh for 5,000 such requests, the page 18 s to draw)."""
    rows = [
        logged(
            "code",
            ts=NOW - 3000 + i,
            tokens_in=1000 * (i + 1),
            tokens_out=0,
            model="small",
            tags=tuple(f"t{i}-{j}" for j in range(10)),
            end_user=f"user-{i}",
        )
        for i in range(3 * TAG_ROWS)
    ]
    data = dashboard_data(Rows(rows, len(rows)), Rows([], 0), REGISTRY, window=HOUR, url="u")
    assert data["tag_count"] == 10 * 3 * TAG_ROWS
    assert len(data["tags"]) == TAG_ROWS
    spends = [t["spend_usd"] for t in data["tags"]]
    assert spends == sorted(spends, reverse=True)  # the costliest
    assert data["tags"][0]["name"].startswith(f"t{3 * TAG_ROWS - 1}-")
    assert empty_dashboard(HOUR, url="u", message="m", max_rows=5)["tag_count"] == 0


def test_the_dashboard_leaves_out_the_reports_groups_per_tag_and_end_user() -> None:
    """The page counts clients, tags and APIs in the database and shows no end users:
    the report's groups for them (percentiles each) were built for every refresh."""
    rows = [
        logged("code", ts=NOW - 100 + i, tags=(f"t{i}",), end_user=f"u{i}", client="k")
        for i in range(5)
    ]
    full = build_report(rows, REGISTRY)
    assert len(full.tags) == 5 and full.user_count == 5 and full.clients
    lean = build_report(rows, REGISTRY, breakdowns=False)
    assert (lean.tags, lean.users, lean.clients, lean.apis, lean.user_count) == ([], [], [], [], 0)
    assert lean.routes == full.routes and lean.total == full.total


def test_routes_beyond_the_chart_limit_are_drawn_as_other() -> None:
    rows = [
        logged(f"r{i}", ts=NOW - 100 + i * 2 + j * 0.1)
        for i in range(SERIES_ROUTES + 2)
        for j in range(SERIES_ROUTES + 2 - i)
    ]
    data = dashboard_data(Rows(rows, len(rows)), Rows([], 0), REGISTRY, window=HOUR, url="u")
    routes = data["series"]["routes"]
    assert list(routes)[-1] == "other" and len(routes) == SERIES_ROUTES + 1
    assert sum(routes["other"]) == 2 + 1  # the two smallest routes


def test_non_finite_numbers_become_null() -> None:
    rows = [logged("code", ts=NOW - 10, margin=math.inf, cost_usd=math.nan)]
    data = dashboard_data(Rows(rows, 1), Rows([], 0), REGISTRY, window=HOUR, url="u")
    json.dumps(data, allow_nan=False)
    assert data["routes"][0]["median_margin"] is None
    assert data["recent"][0]["margin"] is None


def test_an_empty_window_has_a_message_and_empty_series() -> None:
    data = dashboard_data(Rows([], 0), Rows([], 0), REGISTRY, window=HOUR, url="u")
    assert data["summary"] is None and data["routes"] == []
    assert data["log"] == {"enabled": True, "url": "u", "message": "no decisions in the last 1h"}
    assert set(data["series"]["requests"]) == {0}
    off = empty_dashboard(HOUR, url=None, message="the decision log is off")
    assert off["log"]["enabled"] is False
    json.dumps(off, allow_nan=False)


def test_embeddings_and_rerank_count_in_spend_not_in_routing_figures() -> None:
    """Embeddings and rerank answers are requests and spend of the window, under routes
    of their own, but the routing figures (default rate, margins, confidence, layers,
    drift, savings) are those of the routed requests alone."""
    rows = _hour_of_traffic()
    unrouted = [
        logged(
            f"({api})",
            ts=NOW - 3000 + i,
            margin=None,
            confidence=1.0,
            layer="(unrouted)",
            model="small",
            api=api,
            cost_usd=0.5,
            tokens_in=10,
        )
        for api in ("embeddings", "rerank")
        for i in range(60)
    ]
    mixed = sorted(rows + unrouted, key=lambda d: d.ts)
    plain = dashboard_data(
        Rows(rows, len(rows)), Rows(rows, len(rows)), REGISTRY, window=HOUR, url="x"
    )
    data = dashboard_data(
        Rows(mixed, len(mixed)), Rows(rows, len(rows)), REGISTRY, window=HOUR, url="x"
    )
    summary, before = data["summary"], plain["summary"]
    assert summary["requests"] == before["requests"] + 120
    assert summary["spend_usd"] == pytest.approx(before["spend_usd"] + 60.0)
    for figure in ("default_rate", "median_margin", "mean_confidence", "savings"):
        assert summary[figure] == pytest.approx(before[figure]), figure
    assert data["layers"] == plain["layers"]
    assert data["drift"]["mix_tv"] == plain["drift"]["mix_tv"]
    routes = {r["name"]: r for r in data["routes"]}
    assert routes["(embeddings)"]["n"] == 60 and routes["(rerank)"]["spend_usd"] == 30.0


def test_the_escalation_tile_is_of_the_routed_requests() -> None:
    """The fallback tile's escalation rate: one chat in four escalated, beside forty
    embeddings answers (no cascade to escalate), is 25%, not 2%."""
    chats = [
        logged("code", ts=NOW - 100 + i, attempts=("escalated: low confidence",) if i == 0 else ())
        for i in range(4)
    ]
    embedded = [
        logged(
            "(embeddings)",
            ts=NOW - 50 + i,
            margin=None,
            confidence=1.0,
            layer="(unrouted)",
            api="embeddings",
        )
        for i in range(40)
    ]
    rows = sorted(chats + embedded, key=lambda d: d.ts)
    data = dashboard_data(Rows(rows, len(rows)), Rows([], 0), REGISTRY, window=HOUR, url="x")
    assert data["summary"]["escalation_rate"] == pytest.approx(0.25)


def test_route_only_decisions_and_embeddings_do_not_dilute_the_rates() -> None:
    """As the report's: errors of the requests dispatched, fallbacks (and cache hits) of
    the routed ones. Of five chats one fell back, one failed on its only model, one
    failed down its chain (it fell back too) and one was answered from the cache; beside
    them forty
    ``/v1/route`` decisions (nothing dispatched) and forty embeddings answers (no route
    to fall back on) showed a fraction of what the chats alone were."""
    chats = [
        logged(
            "code",
            ts=NOW - 100 + i,
            client="team-a",
            attempts=(
                ("large (timeout)",)
                if i < 2
                else ("large (timeout)", "small (timeout)")
                if i == 4
                else ()
            ),
            served_model="small" if i == 0 else None,  # large failed, small answered
            status=502 if i in (1, 4) else 200,
            error="upstream_error" if i in (1, 4) else None,
            cache_hit=i == 3,
        )
        for i in range(5)
    ]
    asked = [logged("code", ts=NOW - 60 + i, client="team-a", route_only=True) for i in range(40)]
    embedded = [
        logged(
            "(embeddings)",
            ts=NOW - 50 + i,
            margin=None,
            layer="(unrouted)",
            api="embeddings",
        )
        for i in range(40)
    ]
    rows = sorted(chats + asked + embedded, key=lambda d: d.ts)
    data = dashboard_data(Rows(rows, len(rows)), Rows([], 0), REGISTRY, window=HOUR, url="x")
    summary = data["summary"]
    assert summary["fallback_rate"] == pytest.approx(2 / 5)
    assert summary["cache_hit_rate"] == pytest.approx(1 / 5)  # nor have they a cache
    assert summary["error_rate"] == pytest.approx(2 / 45)  # the embeddings were dispatched
    report = build_report(rows, REGISTRY).total  # the same denominators as the report's
    assert (summary["error_rate"], summary["fallback_rate"]) == pytest.approx(
        (report.error_rate, report.fallback_rate)
    )
    code = {r["name"]: r for r in data["routes"]}["code"]
    assert (code["error_rate"], code["fallback_rate"]) == pytest.approx((2 / 5, 2 / 5))
    team = {c["name"]: c for c in data["clients"]}["team-a"]
    assert team["n"] == 45 and team["error_rate"] == pytest.approx(2 / 5)
