"""Conversation affinity: the conversation's name, the plan it gives a later turn
(upgrade and keep), what it leaves alone, a store shared through a real Redis, a store
that does not answer, and the gateway end to end with the official openai client."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve_text
from redis_service import REDIS_URL

from llmroute.decide import Router
from llmroute.dispatch.affinity import AFFINITY_LAYER, Affinity, conversation_key, prefix_key
from llmroute.dispatch.plan import Plan, plan_request
from llmroute.encoders import load_builtin
from llmroute.registry import parse_registry
from llmroute.state.stores import MemoryStore
from llmroute.telemetry.metrics import GatewayMetrics

REGISTRY = """
encoder: builtin:static
providers: {p: {kind: openai, base_url: "%(url)s", timeout_s: 5}}
models:
  small: {provider: p, model: up-small, price: {input: 0.1, output: 0.4}}
  large: {provider: p, model: up-large, price: {input: 3, output: 15}}
routes:
  - name: proofs
    examples: [prove that this theorem holds, derive the formula step by step]
    target: large
    threshold: 0.6
    policy: {fallback: [small]}
  - name: chitchat
    examples: [thanks a lot, hello there, great thank you]
    target: small
    threshold: 0.6
default: {target: small}
affinity: %(affinity)s
"""
PROOF = "prove that this theorem holds for every prime"
THANKS = "thanks a lot"


def _turns(*texts: str, system: str | None = None, said: str = "answer") -> dict[str, Any]:
    """A conversation: user turns with an answer after each but the last."""
    messages: list[dict[str, str]] = (
        [] if system is None else [{"role": "system", "content": system}]
    )
    for i, text in enumerate(texts):
        messages.append({"role": "user", "content": text})
        if i < len(texts) - 1:
            messages.append({"role": "assistant", "content": f"{said} {i}"})
    return {"model": "auto", "messages": messages}


def _setup(
    tmp_path: Path, affinity: str = "{}", outcomes: list[str] | None = None
) -> tuple[Router, Affinity]:
    text = REGISTRY % {"url": "http://127.0.0.1:9/v1", "affinity": affinity}
    router = Router(parse_registry(text), encoder=load_builtin("static"), cache_dir=tmp_path)
    registry = router.loaded.registry
    assert registry.affinity is not None
    store = MemoryStore(100, 1 << 20)
    told = outcomes.append if outcomes is not None else None
    return router, Affinity(registry.affinity, registry, store, told)


def _served(
    router: Router, affinity: Affinity, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Plan:
    plan = plan_request(router, body, headers or {})
    return asyncio.run(affinity.apply(plan, body, headers or {}, "team-a"))


def _name(body: dict[str, Any], client: str | None = "team-a", **headers: str) -> str:
    named = conversation_key(body, {k.replace("_", "-"): v for k, v in headers.items()}, client)
    assert named is not None
    return named.name


def test_a_conversation_is_named_by_its_opening_and_first_answer_or_its_session() -> None:
    first = conversation_key(_turns(PROOF, system="be brief"), {}, "team-a")
    second = conversation_key(_turns(PROOF, THANKS, system="be brief"), {}, "team-a")
    third = conversation_key(_turns(PROOF, THANKS, "and for 3?", system="be brief"), {}, "team-a")
    assert first is not None and second is not None and third is not None
    assert (first.look_up, first.opening) == (False, None)  # a first turn: remembered
    assert second.name == third.name and second.look_up and third.look_up
    assert second.opening == third.opening == first.name  # where the first turn went
    alike = _turns(PROOF, THANKS, system="be brief", said="another reply")  # same opening
    assert _name(alike) != second.name
    assert _name(_turns(PROOF, THANKS, system="be brief"), "team-b") != third.name
    other_user = {**_turns(PROOF, THANKS, system="be brief"), "user": "u-2"}
    assert _name(other_user) != third.name
    by_header = conversation_key(_turns(THANKS), {"x-llmroute-session": "s-1"}, None)
    assert by_header is not None and by_header.look_up  # a named session is always looked up
    assert by_header.name == _name(_turns(PROOF, THANKS), None, X_LLMRoute_Session="s-1")
    assert conversation_key({"messages": [{"role": "system", "content": "x"}]}, {}, None) is None
    greeted = {"messages": [{"role": "assistant", "content": "Hi! Ask me anything."}]}
    greeted["messages"].append({"role": "user", "content": PROOF})
    named = conversation_key(greeted, {}, None)  # an assistant greeting is no answer
    assert named is not None and not named.look_up


def test_conversations_that_opened_alike_move_up_apart(tmp_path: Path) -> None:
    """Two conversations open with the same suggested prompt (same key, no end user):
    the one whose second turn needs the large model moves up; the other stays small,
    and a third conversation opening alike still starts small."""
    router, affinity = _setup(tmp_path)
    one = _served(router, affinity, _turns(THANKS))
    two = _served(router, affinity, _turns(THANKS))
    assert one.decision.model == two.decision.model == "small"
    moved = _served(router, affinity, _turns(THANKS, PROOF, said="one"))
    assert moved.decision.model == "large"
    later = _served(router, affinity, _turns(THANKS, PROOF, THANKS, said="one"))
    assert later.decision.model == "large"  # and it stays up
    other = _served(router, affinity, _turns(THANKS, THANKS, said="two"))
    assert other.decision.model == "small" and other.decision.layer != AFFINITY_LAYER
    third = _served(router, affinity, _turns(THANKS, THANKS, said="three"))
    assert third.decision.model == "small"


def test_a_prompt_prefix_is_named_whoever_sends_it() -> None:
    """What ``sticky`` balancing keys on: the opening alone, so that every turn of a
    conversation, and every client with that opening, shares one deployment's cache."""
    first = prefix_key(_turns(PROOF, system="be brief"))
    assert first is not None and first == prefix_key(_turns(PROOF, THANKS, system="be brief"))
    assert first == prefix_key({**_turns(PROOF, system="be brief"), "user": "u-9"})
    assert first != prefix_key(_turns(PROOF, system="be verbose"))
    assert prefix_key({"messages": [{"role": "system", "content": "x"}]}) is None


def test_a_picture_in_the_opening_is_named_by_its_ends() -> None:
    def opening(data: str) -> dict[str, Any]:
        image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
        return {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]
        }

    big = "A" * 3_000_000
    first, again = (
        conversation_key(opening(big), {}, None),
        conversation_key(opening(big), {}, None),
    )
    other = conversation_key(opening("B" + big[1:]), {}, None)
    assert first == again and first != other


def test_upgrade_keeps_the_costlier_model_and_never_downgrades(tmp_path: Path) -> None:
    outcomes: list[str] = []
    router, affinity = _setup(tmp_path, outcomes=outcomes)
    opened = _served(router, affinity, _turns(PROOF))
    assert (opened.decision.model, opened.decision.layer) == ("large", "intent")
    later = _served(router, affinity, _turns(PROOF, THANKS))
    assert later.decision.route == "chitchat"  # routed on its own text ...
    assert (later.decision.model, later.decision.layer) == ("large", AFFINITY_LAYER)  # ... kept
    assert later.chain == ("large", "small")
    assert "the conversation stays on large (upgrade); intent chose small" in later.decision.reason
    # a conversation that opened cheap moves up when a turn needs more, and stays there
    assert _served(router, affinity, _turns(THANKS)).decision.model == "small"
    assert _served(router, affinity, _turns(THANKS, PROOF)).decision.model == "large"
    assert _served(router, affinity, _turns(THANKS, PROOF, THANKS)).decision.model == "large"
    _served(router, affinity, _turns("where were we?", THANKS))  # never seen: forgotten
    _served(router, affinity, _turns(PROOF, "prove the converse"))  # large anyway
    assert outcomes == ["first", "kept", "first", "upgraded", "kept", "unknown", "same"]


def test_keep_holds_the_first_model_and_a_first_turn_is_routed_on_its_own(
    tmp_path: Path,
) -> None:
    router, affinity = _setup(tmp_path, "{mode: keep}")
    assert _served(router, affinity, _turns(THANKS)).decision.model == "small"
    assert _served(router, affinity, _turns(THANKS, PROOF)).decision.model == "small"
    # the same opening alone is another single-turn request, not a later turn
    _served(router, affinity, _turns(PROOF))  # remembers large under PROOF's opening
    fresh = _served(router, affinity, _turns(PROOF))
    assert (fresh.decision.model, fresh.decision.layer) == ("large", "intent")


def test_the_summary_says_so(tmp_path: Path) -> None:
    from llmroute.registry.summary import summarize

    text = REGISTRY % {"url": "http://127.0.0.1:9/v1", "affinity": "{mode: keep, ttl_s: 600}"}
    lines = summarize(parse_registry(text))
    assert "conversation affinity: keep, kept 600 s, in memory" in lines
    sticky = text.replace(
        "  large: {provider: p, model: up-large, price: {input: 3, output: 15}}",
        "  large:\n    model: up-large\n    price: {input: 3, output: 15}\n"
        "    balance: sticky\n    deployments: [{provider: p}, {provider: p, model: other}]",
    )
    assert sticky != text
    (large,) = [line for line in summarize(parse_registry(sticky)) if line.startswith("  large:")]
    assert large.endswith("balance sticky"), large


def test_pinned_requests_are_left_alone(tmp_path: Path) -> None:
    router, affinity = _setup(tmp_path)
    _served(router, affinity, _turns(PROOF))
    pinned = {**_turns(PROOF, THANKS), "model": "small"}
    assert _served(router, affinity, pinned).decision.model == "small"


def test_a_store_shared_through_redis(tmp_path: Path, redis_namespace: str) -> None:
    """Two gateways: the conversation opened on one goes on on the other."""
    affinity = f"{{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2}}"
    text = REGISTRY % {"url": "http://127.0.0.1:9/v1", "affinity": affinity}
    router = Router(parse_registry(text), encoder=load_builtin("static"), cache_dir=tmp_path)

    async def go() -> list[str]:
        one, two = Affinity.open(router.loaded.registry), Affinity.open(router.loaded.registry)
        assert one is not None and two is not None
        try:
            out = []
            for gateway, body in ((one, _turns(PROOF)), (two, _turns(PROOF, THANKS))):
                plan = plan_request(router, body, {})
                out.append((await gateway.apply(plan, body, {}, "k")).decision.model)
            return out
        finally:
            await one.aclose()
            await two.aclose()

    assert asyncio.run(go()) == ["large", "large"]


def test_a_store_that_does_not_answer_routes_turns_on_their_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens there once it is closed
    affinity = f"{{url: 'redis://:s3cret@127.0.0.1:{closed_port}/0', timeout_s: 0.2}}"
    text = REGISTRY % {"url": "http://127.0.0.1:9/v1", "affinity": affinity}
    router = Router(parse_registry(text), encoder=load_builtin("static"), cache_dir=tmp_path)

    metrics = GatewayMetrics()

    async def go() -> list[str]:
        gateway = Affinity.open(router.loaded.registry, None, metrics.state_error("affinity"))
        assert gateway is not None
        try:
            out = []
            for body in (_turns(PROOF), _turns(PROOF, THANKS), _turns(PROOF, THANKS, THANKS)):
                plan = plan_request(router, body, {})
                out.append((await gateway.apply(plan, body, {})).decision.model)
            return out
        finally:
            await gateway.aclose()

    with caplog.at_level(logging.WARNING, logger="llmroute.affinity"):
        assert asyncio.run(go()) == ["large", "small", "small"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "turns are routed on their own" in warnings[0]
    assert "s3cret" not in warnings[0]
    # the log says one a minute; the metric counts each failed call (one: after it the
    # store is left alone for a second)
    body, _ = metrics.render()
    assert b'llmroute_state_errors_total{feature="affinity"} 1.0' in body


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def test_the_gateway_keeps_a_conversation_on_its_model(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    text = REGISTRY % {"url": upstream.url, "affinity": "{}"}
    with (
        serve_text(text, tmp_path) as served,
        openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as client,
    ):
        first = client.chat.completions.with_raw_response.create(**_turns(PROOF))
        later = client.chat.completions.with_raw_response.create(**_turns(PROOF, THANKS))
        alone = client.chat.completions.with_raw_response.create(**_turns(THANKS))
        session = {"x-llmroute-session": "conv-42"}
        named = [
            client.chat.completions.with_raw_response.create(**_turns(text), extra_headers=session)
            for text in (PROOF, THANKS)  # a client that sends only the new turn
        ]
        metrics = httpx.get(f"{served.url}/metrics", timeout=10).text
    kept = next(
        line
        for line in metrics.splitlines()
        if line.startswith("llmroute_affinity_total") and 'outcome="kept"' in line
    )
    assert kept.endswith(" 2.0"), kept
    headers = [r.headers for r in (first, later, alone, *named)]
    assert [h["x-llmroute-model"] for h in headers] == ["large", "large", "small", "large", "large"]
    assert [h["x-llmroute-layer"] for h in headers] == [
        "intent",
        AFFINITY_LAYER,
        "intent",
        "intent",
        AFFINITY_LAYER,
    ]
    assert later.parse().model == "up-large"


def test_a_route_only_decision_reads_affinity_but_does_not_write_it(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """``POST /v1/route`` decides and sends nothing: a dry run. It remembered the
    conversation's model as a served turn does, so a later real turn of a conversation
    only ever dry-run was kept on the model of a turn never served (and a dry run's
    session header pinned that session). It still reads what served turns remembered."""
    text = REGISTRY % {"url": upstream.url, "affinity": "{}"}
    session = {"x-llmroute-session": "conv-dry"}
    with (
        serve_text(text, tmp_path) as served,
        httpx.Client(base_url=served.url, timeout=30) as http,
    ):
        dry = http.post("/v1/route", json=_turns(PROOF))
        assert (dry.status_code, dry.json()["model"]) == (200, "large")
        assert http.post("/v1/route", json=_turns(PROOF), headers=session).status_code == 200
        later = http.post("/v1/chat/completions", json=_turns(PROOF, THANKS))
        named = http.post("/v1/chat/completions", json=_turns(THANKS), headers=session)
        # served turns are remembered, and a dry run reads them
        served_first = http.post("/v1/chat/completions", json=_turns(PROOF, system="be brief"))
        read = http.post("/v1/route", json=_turns(PROOF, THANKS, system="be brief"))
        metrics = http.get("/metrics").text
    assert later.status_code == 200 and named.status_code == 200
    assert (later.headers["x-llmroute-model"], later.headers["x-llmroute-layer"]) == (
        "small",
        "intent",
    )
    assert (named.headers["x-llmroute-model"], named.headers["x-llmroute-layer"]) == (
        "small",
        "intent",
    )
    assert served_first.headers["x-llmroute-model"] == "large"
    assert (read.json()["model"], read.json()["layer"]) == ("large", AFFINITY_LAYER)
    outcomes = [line for line in metrics.splitlines() if line.startswith("llmroute_affinity_total")]
    # the served turns alone: two first turns, one forgotten later turn (the dry runs'
    # conversation), the named session's turn unknown
    assert sorted(outcomes) == [
        'llmroute_affinity_total{outcome="first"} 1.0',
        'llmroute_affinity_total{outcome="unknown"} 2.0',
    ], outcomes


def test_memory_affinity_with_several_workers_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from llmroute.server.reload import warn_registry

    registry = parse_registry(REGISTRY % {"url": "http://127.0.0.1:9/v1", "affinity": "{}"})
    with caplog.at_level(logging.WARNING):
        warn_registry(registry.registry, workers=1)
        assert not [r for r in caplog.records if "affinity" in r.getMessage()]
        warn_registry(registry.registry, workers=4)
    (line,) = [r.getMessage() for r in caplog.records if "affinity" in r.getMessage()]
    assert "each of the 4 workers remembers conversations in its own memory" in line


def test_limits_counted_in_each_workers_memory_are_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two workers let 36 of 40 requests of an rpm-20 key through (each counts its own);
    the other per-worker state was warned about, limits were not."""
    from llmroute.server.reload import warn_registry

    text = REGISTRY % {"url": "http://127.0.0.1:9/v1", "affinity": "{url: redis://127.0.0.1:9}"}
    limited = text.replace(
        "default:", "auth:\n  keys: [{name: a, sha256: '%s', rpm: 20}]\ndefault:" % ("0" * 64), 1
    )
    registry = parse_registry(limited).registry
    with caplog.at_level(logging.WARNING):
        warn_registry(registry, workers=1)
        assert not [r for r in caplog.records if "dispatch.limits" in r.getMessage()]
        warn_registry(registry, workers=3)
    (line,) = [r.getMessage() for r in caplog.records if "dispatch.limits" in r.getMessage()]
    assert "each of the 3 workers counts client keys' rpm in its own memory" in line
