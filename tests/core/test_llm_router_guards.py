"""The guards of a route the LLM router chose apply on what the decision computed: the
chosen route's safety profile over the first route's (the stricter action for each
finding), the difficulty router's pick for ``none`` on the decision's embedding; no
text embedded, no PII scan nor injection score again (each counted). The router model
is the fake OpenAI upstream, always giving the registry's answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from counting_encoder import CountingEncoder, counted_calls
from fake_upstream import FakeUpstream, fake_upstream
from pool_registries import random_difficulty_router

from llmroute import Router
from llmroute.assemble import build_encoder
from llmroute.dispatch import Dispatcher
from llmroute.dispatch.plan import Plan, keep_within, plan_request
from llmroute.layers.llm_router import LlmRouter, refine_plan
from llmroute.providers import build_providers
from llmroute.registry import load_registry
from llmroute.safety.injection import InjectionDetector
from llmroute.safety.pii import PiiDetector

REGISTRY = """
encoder: builtin:static
intent: {method: knn, k: 1}
providers:
  p: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: p, model: up-small}
  large: {provider: p, model: up-large}
  mid: {provider: p, model: up-mid}
  picker: {provider: p, model: "up-picker?reply=%(answer)s"}
routes:
  - name: code
    examples: [write a python function, debug this SQL query]
    target: mid
    threshold: 0.25
    policy: {safety: open}
  - name: mail
    examples: [send a letter to my landlord, write a note to my neighbour]
    target: mid
    threshold: 0.25
    policy: {safety: careful}
default:
  target: small
  difficulty: {router: %(router)s, strong: large, weak: small, threshold: 1000}
  policy: {safety: strict}
safety:
  profiles:
    open: {injection: allow, pii: allow}
    careful: {injection: allow, pii: {EMAIL: redact, "*": allow}}
    strict: {injection: block, pii: {PHONE: redact, "*": allow}}
  profile: open
llm_fallback: {model: picker, margin: 1.0, timeout_s: 5}
"""
LETTER = "send a letter to my landlord at bob@example.com, call +44 20 7946 0958"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def difficulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_difficulty_router(tmp_path_factory.mktemp("llm-router-guards"))


def _refined(
    answer: str,
    tmp_path: Path,
    upstream: FakeUpstream,
    difficulty: Path,
    monkeypatch: pytest.MonkeyPatch,
    pool: tuple[str, ...] | None = None,
) -> tuple[Plan, list[int]]:
    """`LETTER`'s plan after the LLM router answered `answer` (then kept inside `pool`),
    and the texts embedded, PII scans and injection scores, counted before and after."""
    path = tmp_path / "registry.yaml"
    reply = quote(json.dumps({"route": answer}))
    path.write_text(REGISTRY % {"url": upstream.url, "answer": reply, "router": difficulty})
    loaded = load_registry(path)
    encoder = CountingEncoder(build_encoder(loaded.registry))
    router = Router(loaded, encoder=encoder)
    # Building the router embedded the routes' examples, or read them from the suite's
    # shared embedding cache (a hit or a miss, whatever ran before): not the request's.
    encoder.texts = 0
    finds = counted_calls(monkeypatch, PiiDetector, "find")
    scores = counted_calls(monkeypatch, InjectionDetector, "score")
    body = {"model": "auto", "messages": [{"role": "user", "content": LETTER}]}
    plan = plan_request(router, body, {})
    assert (plan.decision.route, plan.decision.layer) == ("mail", "intent")
    before = [encoder.texts, len(finds), len(scores)]

    async def main() -> Plan:
        registry = router.loaded.registry
        assert registry.llm_fallback is not None
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            llm = LlmRouter(registry.llm_fallback, registry, dispatcher)
            return await refine_plan(llm, router, plan, body, {})
        finally:
            await dispatcher.aclose()

    refined = asyncio.run(main())
    if pool is not None:
        kept = keep_within(router, refined, pool, "team", body, {})
        assert isinstance(kept, Plan), kept
        refined = kept
    return refined, [*before, encoder.texts, len(finds), len(scores)]


def test_a_chosen_route_keeps_the_first_routes_redaction_without_a_second_pass(
    tmp_path: Path, upstream: FakeUpstream, difficulty: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, counts = _refined("code", tmp_path, upstream, difficulty, monkeypatch)
    assert counts[:3] == counts[3:] and counts[0] == 1  # one embedding, one scan of each
    decision = plan.decision
    assert (decision.route, decision.layer, decision.model) == ("code", "llm_router", "mid")
    safety = decision.safety
    assert safety is not None
    assert (safety.profile, safety.action, safety.fired) == (
        "careful+open",
        "redact",
        ("pii:EMAIL", "pii:PHONE"),
    )
    assert safety.redacted_body is not None
    sent = safety.redacted_body["messages"][-1]["content"]
    assert sent == "send a letter to my landlord at <EMAIL_1>, call +44 20 7946 0958"
    assert "the safety profile of route 'mail' kept as well (careful+open: redact)" in (
        decision.reason
    )
    signal = next(s for s in decision.signals if s.layer == "safety")
    assert signal.detail["profile"] == "careful+open"


def test_none_gets_the_defaults_pick_and_profile_on_the_same_embedding(
    tmp_path: Path, upstream: FakeUpstream, difficulty: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, counts = _refined("none", tmp_path, upstream, difficulty, monkeypatch)
    assert counts[:3] == counts[3:] and counts[0] == 1
    decision = plan.decision
    assert (decision.route, decision.layer) == ("default", "llm_router")
    assert decision.model in ("small", "large")  # the difficulty router's pick
    assert plan.chain == (decision.model,)
    safety = decision.safety
    assert safety is not None and (safety.profile, safety.action) == ("careful+strict", "redact")
    assert safety.redacted_body is not None
    sent = safety.redacted_body["messages"][-1]["content"]
    assert sent == "send a letter to my landlord at <EMAIL_1>, call <PHONE_1>"


def test_a_key_pool_then_sends_the_chosen_route_to_the_default(
    tmp_path: Path, upstream: FakeUpstream, difficulty: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Route code's model is outside the pool: the default's profile is applied over the
    two (a merged profile merged again), still without a second pass."""
    plan, counts = _refined(
        "code", tmp_path, upstream, difficulty, monkeypatch, pool=("small", "large")
    )
    assert counts[:3] == counts[3:] and counts[0] == 1
    safety = plan.decision.safety
    assert safety is not None
    assert (safety.profile, safety.action) == ("careful+open+strict", "redact")
    assert safety.redacted_body is not None
    sent = safety.redacted_body["messages"][-1]["content"]
    assert sent == "send a letter to my landlord at <EMAIL_1>, call <PHONE_1>"
    assert plan.chain[0] in ("small", "large")
