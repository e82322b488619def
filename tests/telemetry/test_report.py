"""The report over a window: mix, cost vs the strongest model, rates, latency, feedback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from log_factory import logged

from llmroute.registry import parse_registry
from llmroute.telemetry.record import FeedbackRecord, LoggedDecision, ShadowRecord
from llmroute.telemetry.report import TOP_TAGS, build_report, is_error, strongest_model
from llmroute.telemetry.report_plot import plot_report

REGISTRY = parse_registry(
    """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:8001/v1"}
models:
  small: {provider: local, model: s, price: {input: 1, output: 2}}
  large: {provider: local, model: l, price: {input: 10, output: 30}}
  embed: {provider: local, model: e, kind: embedding, price: {input: 100}}
routes:
  - {name: code, target: large, examples: [write code]}
  - {name: chat, target: small, examples: [hello there]}
default: {target: small}
"""
).registry


def decisions() -> list[LoggedDecision]:
    out = [
        logged("chat", model="small", tokens_in=1000, tokens_out=1000, latency_ms=float(ms))
        for ms in range(1, 101)
    ]  # 100 requests at 0.003 $ each, 0.04 $ on the strongest model
    out += [logged("code", model="large", tokens_in=1000, tokens_out=1000, cost_usd=0.05)] * 20
    out[0] = logged("chat", model="small", attempts=("large (timeout)",), status=502, error="x")
    out[1] = logged(
        "chat", model="small", served_model="large", attempts=("escalated: low confidence",)
    )
    return out


def test_strongest_is_the_most_expensive_chat_model() -> None:
    name, price = strongest_model(REGISTRY) or ("", None)
    assert name == "large" and price is not None and price.output == 30


def test_mix_cost_rates_and_latency() -> None:
    report = build_report(decisions(), REGISTRY)
    routes = {r.name: r for r in report.routes}
    assert [r.name for r in report.routes] == ["chat", "code"]
    assert routes["chat"].share == pytest.approx(100 / 120)
    chat = routes["chat"]
    assert chat.unpriced == 2  # no token counts: left out of both cost columns
    assert chat.cost_usd == pytest.approx(98 * 0.003)
    assert chat.counterfactual_usd == pytest.approx(98 * 0.04)
    assert chat.savings == pytest.approx(1 - 0.003 / 0.04)
    assert routes["code"].savings == pytest.approx(1 - 0.05 / 0.04)  # logged cost wins
    # the request that failed on its only model is an error, no fallback: none answered it
    assert chat.fallbacks == 1 and chat.escalations == 1 and chat.errors == 1
    assert report.total.error_rate == pytest.approx(1 / 120)
    assert chat.p50_ms is not None and 40 < chat.p50_ms < 60
    assert chat.p99_ms is not None and chat.p99_ms > 95
    models = {m.name: m for m in report.models}
    assert models["large"].n == 20 and models["small"].n == 100
    assert report.to_dict()["strongest_model"] == "large"


def test_feedback_and_shadow_per_route() -> None:
    log = decisions()
    feedback = [
        FeedbackRecord(log[5].id, 1.0, score=1.0, thumbs="up"),
        FeedbackRecord(log[6].id, 1.0, score=0.5, thumbs="down"),
        FeedbackRecord(log[-1].id, 1.0, thumbs="up"),
        FeedbackRecord("unknown", 1.0, score=0.0),
    ]
    shadows = [
        ShadowRecord(log[5].id, 1.0, "chat", "small", "large", "a", "b", routed_ok=False),
        ShadowRecord(log[6].id, 1.0, "chat", "small", "large", "a", "b", routed_ok=True),
    ]
    report = build_report(log, REGISTRY, feedback=feedback, shadows=shadows)
    stats = {f.route: f for f in report.feedback}
    assert stats["chat"].n == 2 and stats["chat"].mean_score == pytest.approx(0.75)
    assert stats["chat"].thumbs_up_share == pytest.approx(0.5)
    assert stats["code"].mean_score is None and stats["code"].thumbs_up_share == 1.0
    assert report.feedback_unmatched == 1
    assert report.shadow.overall.lost == 1


def test_client_keys_get_their_own_rows() -> None:
    assert build_report(decisions(), REGISTRY).clients == []  # no keys: no table
    keyed = [
        dataclasses.replace(d, client="team-a" if d.route == "code" else None) for d in decisions()
    ]
    report = build_report(keyed, REGISTRY)
    clients = {c.name: c for c in report.clients}
    assert clients["team-a"].n == 20 and clients["(no key)"].n == 100
    assert clients["team-a"].cost_usd == pytest.approx(20 * 0.05)
    assert report.to_dict()["clients"][0]["name"] == "(no key)"


def test_tags_and_end_users_get_their_own_rows() -> None:
    report = build_report(decisions(), REGISTRY)
    assert (report.tags, report.users, report.user_count) == ([], [], 0)  # none: no tables
    tagged = []
    for i, d in enumerate(decisions()):
        tags = ("team:a", "app=web") if d.route == "code" else ("team:b",) if i % 2 else ()
        tagged.append(dataclasses.replace(d, tags=tags, end_user=f"u{i % 30}"))
    report = build_report(tagged, REGISTRY)
    tags = {t.name: t for t in report.tags}
    assert set(tags) == {"team:a", "app=web", "team:b", "(untagged)"}
    assert tags["team:a"].n == tags["app=web"].n == 20  # a request counts under each tag
    assert tags["team:b"].n == tags["(untagged)"].n == 50
    assert tags["team:a"].cost_usd == pytest.approx(20 * 0.05)
    assert report.user_count == 30 and len(report.users) == 20  # the 20 costliest
    costs = [u.cost_usd for u in report.users]
    assert costs == sorted(costs, reverse=True)
    # u10..u19 made the 20 code requests (i = 100..119) at 0.05 $ each: they cost most
    assert {u.name for u in report.users[:10]} == {f"u{i}" for i in range(10, 20)}
    payload = report.to_dict()
    assert payload["user_count"] == 30 and len(payload["users"]) == 20
    assert {t["name"] for t in payload["tags"]} == set(tags)
    # the distinct tags: `(untagged)` is the requests without one, not a tag
    assert report.tag_count == payload["tag_count"] == 3


def test_no_prices_means_no_counterfactual() -> None:
    report = build_report(decisions(), None)
    assert report.strongest is None and report.total.counterfactual_usd is None
    assert report.total.cost_usd == pytest.approx(20 * 0.05)


@pytest.mark.parametrize("suffix", [".html", ".png"])
def test_plot(tmp_path: Path, suffix: str) -> None:
    if suffix == ".png":
        pytest.importorskip("matplotlib")
    path = tmp_path / f"report{suffix}"
    plot_report(build_report(decisions(), REGISTRY), path, title="t")
    assert path.stat().st_size > 500
    if suffix == ".html":
        page = path.read_text(encoding="utf-8")
        assert "<svg" in page and "route mix" in page and "always large" in page
        assert "http" not in page.replace("http://www.w3.org", "")


def test_route_only_decisions_count_in_the_mix_not_in_latency_or_cost() -> None:
    """``/v1/route`` decisions dispatched nothing: they are part of the route mix (and
    of `n`), but their decision-only latency and missing tokens must not pull the
    latency down or count as unpriced requests."""
    only = [
        logged("code", model="large", route_only=True, latency_ms=0.2, tokens_in=None)
        for _ in range(30)
    ]
    report = build_report(decisions() + only, REGISTRY)
    plain = build_report(decisions(), REGISTRY)
    code = {r.name: r for r in report.routes}["code"]
    assert code.n == 50 and code.route_only == 30 and code.unpriced == 0
    assert code.cost_usd == pytest.approx(20 * 0.05)
    assert (code.p50_ms, code.p99_ms) == (100.0, 100.0)
    assert report.total.n == 150 and report.total.route_only == 30
    assert report.total.p50_ms == plain.total.p50_ms
    assert report.total.unpriced == plain.total.unpriced
    assert report.to_dict()["total"]["route_only"] == 30


def test_a_client_that_hung_up_is_no_error() -> None:
    assert not is_error(logged("chat", status=499, error="client_disconnected"))
    assert not is_error(logged("chat", status=200, error="client_disconnected"))  # a stream
    assert is_error(logged("chat", status=502, error="upstream_error"))
    assert is_error(logged("chat", status=200, error="stream_interrupted"))


def test_a_models_row_holds_what_was_routed_to_it_priced_at_what_answered() -> None:
    """A target that is down keeps its row (its fallback rate says so) rather than
    vanishing behind its fallback; the tokens its fallback answered with are priced at
    the fallback's price, not the target's."""
    rows = [
        logged("code", model="large", served_model="small", tokens_in=1000, tokens_out=1000,
               attempts=("large via local (HTTP 503)",), latency_ms=400.0)
        for _ in range(4)
    ]  # fmt: skip
    rows.append(logged("code", model="large", status=502, error="upstream_error"))
    report = build_report(rows, REGISTRY)
    models = {g.name: g for g in report.models}
    assert set(models) == {"large"}
    assert models["large"].n == 5 and models["large"].fallbacks == 4
    assert models["large"].errors == 1
    assert models["large"].cost_usd == pytest.approx(4 * 0.003)  # at small's price


def test_a_request_that_failed_down_its_whole_chain_fell_back() -> None:
    """A route whose every request failed on its target and then on its fallback showed
    "fallbacks 0.0%": each did fall back (and failed, an error too). One that failed on
    its only model did not: it went on to no other model; nor did a stream that failed
    on the model it was answering from, which its attempts name as it answered."""
    down = ("large via local (HTTP 503)", "small via local (HTTP 503)")
    rows = [
        logged("code", model="large", status=502, error="upstream_error", attempts=down)
        for _ in range(3)
    ]
    rows.append(
        logged("chat", model="small", status=502, error="upstream_error",
               attempts=("small via local (HTTP 503)",))
    )  # fmt: skip
    # streams that broke after their 200: on the model they went on to (a fallback),
    # and on their own model, which lists it as it answered (none)
    broke = {"status": 200, "error": "stream_interrupted", "stream": True}
    rows.append(logged("chat", model="small", served_model="large", attempts=down[1:], **broke))
    rows.append(logged("chat", model="small", served_model="small", attempts=down[1:], **broke))
    report = build_report(rows, REGISTRY)
    routes = {g.name: g for g in report.routes}
    assert routes["code"].fallbacks == 3 and routes["code"].fallback_rate == 1.0
    assert routes["code"].errors == 3
    assert routes["chat"].fallbacks == 1 and routes["chat"].errors == 3
    assert report.to_dict()["total"]["fallback_rate"] == pytest.approx(4 / 6)


def test_tags_are_the_costliest_few_however_many_clients_make_up() -> None:
    """A client choosing a new tag a request made a report (and its JSON) of that many
    rows, each with its percentiles; the report lists the TOP_TAGS costliest and says how
    many there were, as it does for end users."""
    tagged = [
        dataclasses.replace(d, tags=(f"one-off-{i}", "team:a" if d.route == "code" else "team:b"))
        for i, d in enumerate(decisions())
    ]
    report = build_report(tagged, REGISTRY)
    assert report.tag_count == len(tagged) + 2 and len(report.tags) == TOP_TAGS
    costs = [t.cost_usd for t in report.tags]
    assert costs == sorted(costs, reverse=True)
    # the two shared tags cost the most, then the one-offs of the 20 code requests
    # (0.05 $ each), then cheaper one-offs, ties by name
    assert [(t.name, t.n) for t in report.tags[:2]] == [("team:a", 20), ("team:b", 100)]
    code_ones = {f"one-off-{i}" for i, d in enumerate(decisions()) if d.route == "code"}
    assert {t.name for t in report.tags[2:22]} == code_ones
    assert report.tags[22].cost_usd < report.tags[21].cost_usd
    payload = report.to_dict()
    assert payload["tag_count"] == len(tagged) + 2 and len(payload["tags"]) == TOP_TAGS


def _unrouted(n: int, api: str = "embeddings", model: str = "embed") -> list[LoggedDecision]:
    """`n` embeddings (or rerank) answers as the gateway logs them: no layer decided them."""
    return [
        logged(
            f"({api})",
            model=model,
            layer="(unrouted)",
            margin=None,
            confidence=1.0,
            api=api,
            tokens_in=1000,
            tokens_out=0,
            cost_usd=0.1,
            latency_ms=5.0,
        )
        for _ in range(n)
    ]


def test_embeddings_and_rerank_count_in_spend_not_in_layers_or_savings() -> None:
    """Embeddings and rerank answers are requests and spend (total, their own routes and
    models, per key and API) but no routing chose their model: the deciding layers and
    the savings against the strongest model are what they were without them."""
    unrouted = _unrouted(30) + _unrouted(10, "rerank", "rr")
    report = build_report(decisions() + unrouted, REGISTRY)
    plain = build_report(decisions(), REGISTRY)
    assert report.total.n == plain.total.n + 40
    assert report.total.cost_usd == pytest.approx(plain.total.cost_usd + 40 * 0.1)
    assert report.total.unrouted == 40 and report.total.unrouted_usd == pytest.approx(4.0)
    assert report.total.counterfactual_usd == pytest.approx(plain.total.counterfactual_usd)
    assert report.total.savings == pytest.approx(plain.total.savings)
    assert report.total.unpriced == plain.total.unpriced
    routes = {r.name: r for r in report.routes}
    assert routes["(embeddings)"].cost_usd == pytest.approx(3.0)
    assert routes["(embeddings)"].counterfactual_usd is None
    assert routes["(embeddings)"].savings is None
    assert routes["(rerank)"].n == 10
    assert {m.name: m.cost_usd for m in report.models}["embed"] == pytest.approx(3.0)
    assert [(g.name, g.n, g.share) for g in report.layers] == [
        (g.name, g.n, g.share) for g in plain.layers
    ]
    assert {a.name: a.n for a in report.apis} == {"embeddings": 30, "rerank": 10, "(none)": 120}
    assert report.to_dict()["total"]["unrouted_usd"] == pytest.approx(4.0)


def test_embeddings_and_rerank_do_not_dilute_the_escalation_rate() -> None:
    """A cascade escalates routed requests only: a gateway answering ten embeddings
    requests for each chat showed a tenth of its escalation rate (the dashboard's tile
    too, which reads the total's)."""
    plain = build_report(decisions(), REGISTRY)
    assert plain.total.escalations > 0  # the fixture escalates some: not vacuous
    report = build_report(decisions() + _unrouted(300) + _unrouted(100, "rerank", "rr"), REGISTRY)
    assert report.total.escalations == plain.total.escalations
    assert report.total.escalation_rate == pytest.approx(plain.total.escalation_rate)
    assert report.to_dict()["total"]["escalation_rate"] == pytest.approx(
        plain.total.escalation_rate
    )
    routes = {r.name: r for r in report.routes}
    assert routes["(embeddings)"].escalation_rate is None  # nothing there could escalate


def test_route_only_decisions_and_embeddings_do_not_dilute_the_rates() -> None:
    """A ``/v1/route`` decision called no model, so it cannot fail, fall back or
    escalate; an embeddings answer can fail, but no route or cascade serves it. Two
    hundred of the one and three hundred of the other left the fallback and escalation
    rates a fifth of what they were; the error rate counts the embeddings, not the
    decisions."""
    plain = build_report(decisions(), REGISTRY)
    assert plain.total.fallbacks and plain.total.errors  # not vacuous
    asked = [logged("code", model="large", route_only=True) for _ in range(200)]
    report = build_report(decisions() + asked + _unrouted(300), REGISTRY)
    total = report.total
    assert total.fallback_rate == pytest.approx(plain.total.fallback_rate)
    assert total.escalation_rate == pytest.approx(plain.total.escalation_rate)
    assert total.error_rate == pytest.approx(plain.total.errors / (120 + 300))
    code = {r.name: r for r in report.routes}["code"]
    assert code.error_rate == 0.0 and code.fallback_rate == 0.0  # of its 20 dispatched
    assert {r.name: r for r in report.routes}["(embeddings)"].fallback_rate is None
    payload = report.to_dict()["total"]
    assert payload["fallback_rate"] == pytest.approx(plain.total.fallback_rate)
    only_asked = build_report(asked, REGISTRY).total
    assert only_asked.error_rate is None and only_asked.fallback_rate is None


def test_an_escalated_cascade_is_compared_with_one_call_to_the_strongest_model() -> None:
    """A cascade that escalated from small to large logs both tiers' tokens (1,000 in
    and out each: the same request twice); sending it to large once would have cost
    0.04 $, not the 0.08 $ its summed tokens price at, so the 0.043 $ it cost is a loss,
    not the 46% saving it showed."""
    cascade = logged(
        "maths",
        model="small",
        served_model="large",
        tokens_in=2000,
        tokens_out=2000,
        cost_usd=0.043,
        attempts=("small escalated: heuristic (refusal)",),
    )
    route = build_report([cascade], REGISTRY).routes[0]
    assert route.counterfactual_usd == pytest.approx(0.04)
    assert route.savings == pytest.approx(1 - 0.043 / 0.04)
    # a fallback's failed attempts paid for nothing: its tokens are its answer's
    fallback = dataclasses.replace(cascade, attempts=("large via up (timeout)",))
    assert build_report([fallback], REGISTRY).total.counterfactual_usd == pytest.approx(0.08)


def test_only_a_tier_passed_over_is_an_escalation() -> None:
    """An escalation is an attempt written ``MODEL escalated: GATE (REASON)``; one whose
    model, provider or upstream message says "cascade" or "escalat" failed, paid for
    nothing, and is no escalation (nor a call in the counterfactual)."""
    failures = (
        "cascade-small failed: cascade-small via up (HTTP 503)",  # a cascade's tier failed
        "mini via cascade-proxy (timeout)",
        "mid via up (HTTP 500: request escalated to on-call)",
    )
    fallback = logged(
        "maths",
        model="cascade-small",
        served_model="large",
        tokens_in=1000,
        tokens_out=1000,
        cost_usd=0.043,
        attempts=failures,
    )
    route = build_report([fallback], REGISTRY).routes[0]
    assert route.escalation_rate == 0
    assert route.counterfactual_usd == pytest.approx(0.04)  # one call to large, as served
    escalated = dataclasses.replace(
        fallback,
        tokens_in=2000,
        tokens_out=2000,
        attempts=("cascade-small escalated: heuristic (refusal)", *failures),
    )
    route = build_report([escalated], REGISTRY).routes[0]
    assert route.escalation_rate == 1
    assert route.counterfactual_usd == pytest.approx(0.04)  # two calls paid: one's share


def test_a_cache_hit_is_priced_at_the_latest_priced_answer_of_its_prompt_and_model() -> None:
    """Whatever order the rows come in: the answer with the latest `ts` that has a price
    (an unpriced, failed or route-only one, or another model's, is passed over)."""
    hit = dict(cache_hit=True, prompt_hash="p")
    log = [
        logged("chat", ts=30.0, **hit),
        logged("chat", ts=20.0, prompt_hash="p", cost_usd=0.2),  # the latest priced
        logged("chat", ts=10.0, prompt_hash="p", cost_usd=0.1),
        logged("chat", ts=25.0, prompt_hash="p"),  # no price: passed over
        logged("chat", ts=26.0, prompt_hash="p", cost_usd=9.0, status=502, error="x"),
        logged("chat", ts=27.0, prompt_hash="p", cost_usd=9.0, route_only=True),
        logged("chat", ts=28.0, prompt_hash="p", cost_usd=9.0, model="large"),
        logged("chat", ts=5.0, **hit),
        logged("chat", ts=6.0, cache_hit=True, prompt_hash="unanswered"),
    ]
    for rows in (log, log[::-1]):
        cache = build_report(rows, None).cache
        assert (cache.hits, cache.priced) == (3, 2)
        assert cache.not_spent_usd == pytest.approx(0.4)
    none = build_report(log[1:7], None).cache
    assert (none.hits, none.priced, none.not_spent_usd) == (0, 0, 0.0)
