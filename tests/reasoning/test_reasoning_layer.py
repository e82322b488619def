"""The reasoning gate: its rules, its scorer, and the tier it picks per route."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmroute.decide import Router
from llmroute.decision import SafetyOutcome, Verdict
from llmroute.dispatch import plan_request
from llmroute.encoders import load_builtin
from llmroute.encoders.fake import FakeEncoder
from llmroute.errors import ConfigError
from llmroute.layers.base import DecisionContext
from llmroute.layers.reasoning import ReasoningLayer, build_reasoning_layer
from llmroute.reasoning import ReasoningScorer, save_scorer
from llmroute.registry import parse_registry
from llmroute.request import RouteRequest

REGISTRY = """
encoder: builtin:static
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:8001/v1"}
models:
  small: {provider: local, model: s}
  large: {provider: local, model: l}
  thinker: {provider: local, model: t, reasoning: {effort: high}}
  deep: {provider: local, model: d, reasoning: {budget_tokens: 8000}}
routes:
  - name: code
    target: large
    reasoning_target: thinker
    examples: ["write a python function to parse json", "refactor this javascript class"]
  - name: chitchat
    target: small
    examples: ["hi there how are you", "good morning friend"]
default: {target: small, reasoning_target: deep}
intent: {threshold: 0.75}
rules:
  - {name: vip, when: {header: {x-tenant: acme}}, target: large}
reasoning: %(reasoning)s
"""


def _router(tmp_path: Path, reasoning: str = "{scorer: null}") -> Router:
    loaded = parse_registry(REGISTRY % {"reasoning": reasoning}, source="test.yaml")
    return Router(loaded, encoder=load_builtin("static"), cache_dir=tmp_path)


def _gate(text: str, layer: ReasoningLayer, verdict: Verdict | None = None) -> DecisionContext:
    ctx = DecisionContext(RouteRequest(text), FakeEncoder().encode)
    ctx.verdict = verdict
    layer.evaluate(ctx)
    assert ctx.reasoning is not None
    return ctx


@pytest.mark.parametrize(
    ("text", "trigger"),
    [
        ("Prove that the square root of 2 is irrational", "prove that"),
        ("derive the quadratic formula", "derive"),
        ("Walk me through it step by step please", "step by step"),
        ("can you debug this function for me", "debug"),
        ("why is this wrong? x = x++ + 1", "why is this wrong"),
        ("Show your work when you answer", "show your work"),
        ("show your reasoning", "show your reasoning"),
        ("explain why the sky is blue", "explain why"),
        ("what is the time complexity of heapsort", "time complexity"),
        ("give a formal proof of the lemma", "formal proof"),
        ("show it by induction on n", "by induction"),
    ],
)
def test_triggers(text: str, trigger: str) -> None:
    ctx = _gate(text, ReasoningLayer())
    assert ctx.reasoning is not None and ctx.reasoning.needed
    assert f"trigger '{trigger}'" in ctx.reasoning.reason


@pytest.mark.parametrize(
    "text", ["hi", "what's the capital of France?", "write a haiku about autumn", "thanks!"]
)
def test_plain_requests_do_not_need_reasoning(text: str) -> None:
    ctx = _gate(text, ReasoningLayer())
    assert ctx.reasoning is not None and not ctx.reasoning.needed
    assert ctx.reasoning.tier is None and ctx.reasoning.score is None


def test_custom_triggers_replace_the_defaults() -> None:
    layer = ReasoningLayer(triggers=(r"\bcarefully\b",))
    assert _gate("please answer carefully", layer).reasoning.needed  # type: ignore[union-attr]
    assert not _gate("prove that 1 + 1 = 2", layer).reasoning.needed  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("Answer these:\n1. what is DNS\n2. what is TCP\n3) what is UDP", 3),
        ("- first point\n- second point\n* third point", 3),
        ("(a) state it (b) no\n(a) one\n(b) two\n(c) three", 3),
        ("Who won? When? Where? Why?", 3),  # counting stops at min_parts
    ],
)
def test_multi_part_questions(text: str, parts: int) -> None:
    ctx = _gate(text, ReasoningLayer(min_parts=3))
    assert ctx.reasoning is not None and ctx.reasoning.needed
    assert f"{parts} parts" in ctx.reasoning.reason


def test_multiple_choice_options_are_not_parts() -> None:
    text = "Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:"
    ctx = _gate(text, ReasoningLayer(min_parts=3))
    assert ctx.reasoning is not None and not ctx.reasoning.needed


def test_two_questions_are_below_min_parts() -> None:
    assert not _gate("How? Why?", ReasoningLayer(min_parts=3)).reasoning.needed  # type: ignore[union-attr]


def test_long_requests() -> None:
    layer = ReasoningLayer(long_tokens=100)
    ctx = _gate("word " * 80, layer)  # 400 chars: 100 tokens
    assert ctx.reasoning is not None and ctx.reasoning.needed
    assert "100 tokens ≥ 100" in ctx.reasoning.reason
    assert not _gate("word " * 70, layer).reasoning.needed  # type: ignore[union-attr]


def test_a_long_chinese_request_is_long() -> None:
    """Counted four characters a token, 150 Chinese characters were 38 tokens; they are
    about 150."""
    layer = ReasoningLayer(long_tokens=100)
    ctx = _gate("这是一份很长的合同。" * 15, layer)
    assert ctx.reasoning is not None and ctx.reasoning.needed
    assert "150 tokens ≥ 100" in ctx.reasoning.reason


def test_trigger_past_the_long_threshold_is_still_long() -> None:
    layer = ReasoningLayer(long_tokens=10)
    ctx = _gate("x" * 400 + " prove that", layer)  # only the head is scanned
    assert ctx.reasoning is not None and ctx.reasoning.needed
    assert "trigger" not in ctx.reasoning.reason and "tokens" in ctx.reasoning.reason


def _scorer(dim: int, direction: int, bias: float = 0.0) -> ReasoningScorer:
    weights = np.zeros(dim, dtype=np.float32)
    weights[direction] = 10.0
    return ReasoningScorer(weights, bias, 0.55, "fake")


def test_scorer_fires_at_its_threshold() -> None:
    encoder = FakeEncoder()
    vector = encoder.encode(["solve this"])[0]
    direction = int(np.argmax(vector))
    layer = ReasoningLayer(scorer=_scorer(encoder.dim, direction))
    ctx = _gate("solve this", layer)
    assert ctx.reasoning is not None and ctx.reasoning.needed
    assert ctx.reasoning.score is not None and ctx.reasoning.score > 0.55
    assert f"scorer {ctx.reasoning.score:.2f} ≥ 0.55" in ctx.reasoning.reason
    high = ReasoningLayer(scorer=_scorer(encoder.dim, direction), threshold=0.9999999)
    assert not _gate("solve this", high).reasoning.needed  # type: ignore[union-attr]


def test_blocked_requests_skip_the_gate() -> None:
    ctx = DecisionContext(RouteRequest("prove that"), FakeEncoder().encode)
    ctx.safety = SafetyOutcome(profile="standard", action="block", fired=("injection",))
    result = ReasoningLayer().evaluate(ctx)
    assert ctx.reasoning is None
    assert result.detail == {"skipped": "blocked by safety"}


# -- tiers through the whole pipeline ----------------------------------------------------


def test_tier_follows_the_route(tmp_path: Path) -> None:
    router = _router(tmp_path)
    decision = router.decide("write a python function to parse json, step by step")
    assert decision.route == "code"
    assert decision.reasoning is not None and decision.reasoning.needed
    assert decision.reasoning.tier == "thinker" and decision.model == "thinker"
    assert "reasoning tier" in decision.reason
    plain = router.decide("write a python function to parse json")
    assert plain.model == "large" and plain.reasoning is not None
    assert not plain.reasoning.needed and plain.reasoning.tier is None


def test_a_route_without_a_tier_keeps_its_model(tmp_path: Path) -> None:
    decision = _router(tmp_path).decide("hi there how are you? explain why")
    assert decision.route == "chitchat" and decision.model == "small"
    assert decision.reasoning is not None and decision.reasoning.needed
    assert decision.reasoning.tier is None


def test_default_uses_the_default_tier(tmp_path: Path) -> None:
    decision = _router(tmp_path).decide("prove that there are infinitely many primes")
    assert decision.route == "default"
    assert decision.reasoning is not None and decision.reasoning.tier == "deep"
    assert decision.model == "deep"


def test_a_rule_naming_a_model_keeps_it(tmp_path: Path) -> None:
    decision = _router(tmp_path).decide("prove that 2 is prime", headers={"x-tenant": "acme"})
    assert decision.layer == "rules" and decision.model == "large"
    assert decision.reasoning is not None and decision.reasoning.needed
    assert decision.reasoning.tier is None


def test_pinned_pool_models_are_never_switched(tmp_path: Path) -> None:
    router = _router(tmp_path)
    body = {"model": "large", "messages": [{"role": "user", "content": "prove that 2 > 1"}]}
    plan = plan_request(router, body, {})
    assert plan.decision.route == "pinned" and plan.chain == ("large",)
    assert plan.decision.reasoning is not None and plan.decision.reasoning.needed
    assert plan.decision.reasoning.tier is None
    # pinning a route is asking for the route: its tier applies
    body["model"] = "code"
    assert plan_request(router, body, {}).decision.model == "thinker"


def test_signal_in_decision_json(tmp_path: Path) -> None:
    out = _router(tmp_path).decide("prove that 1 = 1").to_dict()
    assert out["reasoning"]["needed"] is True
    gate = next(s for s in out["layers"] if s["layer"] == "reasoning")
    assert gate["outcome"] == "annotated"
    assert gate["detail"]["trigger"] == "prove that"
    assert "reason" not in gate["detail"]  # a pass reason would rewrite the default's


def test_builtin_scorer_loads_for_the_registry_encoder(tmp_path: Path) -> None:
    router = _router(tmp_path, "{scorer: builtin}")
    decision = router.decide(
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May?"
    )
    assert decision.reasoning is not None and decision.reasoning.score is not None
    assert decision.reasoning.needed and "scorer" in decision.reasoning.reason
    assert not router.decide("I am still waiting on my card").reasoning.needed  # type: ignore[union-attr]


# written for this test: a coding request and a weather question in Chinese
_CHINESE = ("写一个函数，把两个有序数组合并成一个有序数组。", "明天北京会下雨吗？")


@pytest.mark.parametrize("rules", ["", "  - {name: zh, when: {regex: '数组'}, target: large}"])
def test_the_scorer_does_not_score_text_the_encoder_does_not_read(
    tmp_path: Path, rules: str
) -> None:
    """The built-in encoders read Latin letters: the vector of a Chinese request is made of
    [UNK]s, and the scorer's score of it means nothing (the coding request scored 0.98 and
    went to the reasoning tier). The scorer is left out, as the intent layer is (when a
    rule decided, the gate checks the scripts itself); its triggers still count."""
    registry = REGISTRY.replace("reasoning: %(reasoning)s", "reasoning: {scorer: builtin}")
    registry = registry.replace("  - {name: vip,", f"{rules}\n  - {{name: vip,")
    loaded = parse_registry(registry, source="test.yaml")
    router = Router(loaded, encoder=load_builtin("static"), cache_dir=tmp_path)
    for text in _CHINESE:
        reasoning = router.decide(text).reasoning
        assert reasoning is not None and not reasoning.needed, reasoning
        assert reasoning.score is None
        assert "no scorer: text mostly in Han 100%" in reasoning.reason
    triggered = router.decide("step by step: " + _CHINESE[0]).reasoning
    assert triggered is not None and triggered.needed and "step by step" in triggered.reason
    english = router.decide("I am still waiting on my card").reasoning
    assert english is not None and english.score is not None


def test_builtin_scorer_refuses_other_encoders(tmp_path: Path) -> None:
    loaded = parse_registry(REGISTRY % {"reasoning": "{}"}, source="test.yaml")
    with pytest.raises(ConfigError, match="llmroute train reasoning"):
        build_reasoning_layer(loaded.registry, FakeEncoder(), tmp_path)


def test_scorer_directory_is_relative_to_the_registry(tmp_path: Path) -> None:
    encoder = FakeEncoder()
    scorer = ReasoningScorer(np.zeros(encoder.dim, np.float32), 0.0, 0.3, encoder.identity)
    save_scorer(scorer, tmp_path / "gate", hyper={}, trained_on={}, metrics={})
    loaded = parse_registry(REGISTRY % {"reasoning": "{scorer: gate}"}, source="test.yaml")
    layer = build_reasoning_layer(loaded.registry, encoder, tmp_path)
    assert layer.scorer is not None and layer.threshold == 0.3
    other = load_builtin("static")
    with pytest.raises(ConfigError, match="trained with encoder"):
        build_reasoning_layer(loaded.registry, other, tmp_path)


def test_disabled_gate_is_not_built(tmp_path: Path) -> None:
    router = _router(tmp_path, "{enabled: false}")
    decision = router.decide("prove that 1 = 1")
    assert decision.reasoning is None
    assert all(layer.name != "reasoning" for layer in router.layers)


def test_route_explain_prints_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmroute.cli._app import run

    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY % {"reasoning": "{scorer: null}"})
    code = run(["route", "-r", str(registry), "--explain", "prove that 2 is prime"])
    out = capsys.readouterr().out
    assert code == 0
    assert "reasoning: needed, served by deep (trigger 'prove that')" in out
    code = run(["route", "-r", str(registry), "--json", "good morning friend"])
    assert code == 0
    assert '"reasoning": {"needed": false' in capsys.readouterr().out


def test_triggers_that_do_not_combine_are_a_config_error(tmp_path: Path) -> None:
    loaded = parse_registry(
        REGISTRY % {"reasoning": "{scorer: null, triggers: ['a', '(?i)b']}"}, source="t.yaml"
    )
    with pytest.raises(ConfigError, match=r"reasoning\.triggers"):
        build_reasoning_layer(loaded.registry, FakeEncoder(), tmp_path)


def test_a_request_counts_its_estimate_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Non-ASCII text's estimate is three encodes of all of it: a rule's ``min_tokens``
    and ``max_tokens`` and the long trigger share one count a request, not one each."""
    import llmroute.request

    counted: list[int] = []
    real = llmroute.request.quarter_tokens

    def counting(text: str) -> int:
        counted.append(len(text))
        return real(text)

    monkeypatch.setattr(llmroute.request, "quarter_tokens", counting)
    rule = "  - {name: long, when: {min_tokens: 100, max_tokens: 9000}, target: large}\n"
    registry = REGISTRY.replace("rules:\n", "rules:\n" + rule)
    reasoning = {"reasoning": "{scorer: null, long_tokens: 100}"}
    loaded = parse_registry(registry % reasoning, source="test.yaml")
    router = Router(loaded, encoder=load_builtin("static"), cache_dir=tmp_path)
    decision = router.decide("这是一份很长的合同。" * 15)
    assert decision.model == "large" and decision.reasoning is not None
    assert decision.reasoning.needed and "150 tokens ≥ 100" in decision.reasoning.reason
    assert counted == [150]
