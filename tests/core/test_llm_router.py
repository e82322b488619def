"""The LLM router against a scripted OpenAI-protocol server (real HTTP on 127.0.0.1)
that answers ``{"route": ...}`` by the request's text and records what it was sent."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fake_upstream import serve_in_thread

from llmroute.decide import Router
from llmroute.decision import Decision, Outcome, SafetyOutcome
from llmroute.dispatch import Dispatcher, plan_request
from llmroute.encoders.fake import FakeEncoder
from llmroute.errors import ConfigError
from llmroute.layers.llm_router import (
    LLM_ROUTER_LAYER,
    LlmRouter,
    parse_answer,
    refine_decision,
    refine_plan,
    response_format,
)
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import LlmFallback
from llmroute.telemetry.metrics import GatewayMetrics
from llmroute.telemetry.record import DECISION_COLUMNS, DecisionRecord

T = TypeVar("T")

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s/v1", timeout_s: 10}
models:
  small: {provider: fake, model: up-small}
  large: {provider: fake, model: up-large}
  backup: {provider: fake, model: up-backup}
  thinker: {provider: fake, model: up-thinker, reasoning: {effort: high}}
  picker: {provider: fake, model: up-picker}
intent:
  threshold: %(threshold)s
routes:
  - name: code
    description: programming, debugging and code review
    target: large
    reasoning_target: thinker
    policy: {fallback: [backup]}
    examples:
      - write a python function to parse json
      - fix this python bug in my function
      - refactor this javascript class
  - name: weather
    target: small
    examples:
      - what is the weather tomorrow
      - will it rain today in paris
      - weather forecast for the weekend
  - name: cooking
    target: small
    examples:
      - recipe for chocolate cake
      - how long to boil an egg
      - cooking pasta with garlic sauce
default: {target: small}
rules:
  - name: tenant
    when: {header: {x-tenant: acme}}
    target: large
reasoning: {scorer: null, triggers: ["step by step"]}
llm_fallback:
  model: picker
  margin: %(margin)s
  timeout_s: %(timeout)s
  max_chars: 100
  max_concurrency: %(concurrency)s
"""

WEATHER = "what is the weather tomorrow"
NO_DISPATCHER: Any = None  # `applies` never calls the model


@dataclass
class Script:
    """What the scripted server answers: by a substring of the user's message, a reply
    text and a delay; `requests` records every body it was sent."""

    replies: dict[str, str] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    reject_schema: bool = False  # answer 400 to a request with response_format
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, body: dict[str, Any]) -> tuple[str, float]:
        text = str(body["messages"][-1]["content"])
        reply = next((r for key, r in self.replies.items() if key in text), '{"route": "none"}')
        delay = next((d for key, d in self.delays.items() if key in text), 0.0)
        return reply, delay


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            with script.lock:
                script.requests.append(body)
            reply, delay = script.answer(body)
            time.sleep(delay)
            if script.reject_schema and "response_format" in body:
                self._send(400, {"error": {"message": "no json_schema", "type": "invalid"}})
                return
            raw = {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            self._send(200, raw)

        def _send(self, status: int, data: Any) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def url(script: Script) -> Iterator[str]:
    with serve_in_thread(_handler(script)) as base:
        yield base


MakeRouter = Callable[..., Router]


@pytest.fixture
def make(url: str, tmp_path: Path) -> MakeRouter:
    def build(
        margin: float = 1.0, threshold: float = 0.3, timeout: float = 5.0, concurrency: int = 4
    ) -> Router:
        text = REGISTRY % {
            "url": url,
            "margin": margin,
            "threshold": threshold,
            "timeout": timeout,
            "concurrency": concurrency,
        }
        return Router(
            parse_registry(text, source="t.yaml"), encoder=FakeEncoder(), cache_dir=tmp_path
        )

    return build


def settings(router: Router) -> LlmFallback:
    fallback = router.loaded.registry.llm_fallback
    assert fallback is not None
    return fallback


def run_with(router: Router, work: Callable[[LlmRouter], Awaitable[T]], **kwargs: Any) -> T:
    """Run `work` with an LLM router (and its dispatcher) on a fresh loop, then close."""

    async def main() -> T:
        registry = router.loaded.registry
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            return await work(LlmRouter(settings(router), registry, dispatcher, **kwargs))
        finally:
            await dispatcher.aclose()

    return asyncio.run(main())


def intent_decision(router: Router, text: str = WEATHER) -> Decision:
    decision = router.decide(text)
    assert decision.layer == "intent", decision.reason
    assert decision.margin is not None
    return decision


def llm_signal(decision: Decision) -> Any:
    signals = [s for s in decision.signals if s.layer == LLM_ROUTER_LAYER]
    assert len(signals) == 1
    return signals[0]


# -- applies -----------------------------------------------------------------------------


def test_applies_only_below_the_margin(make: MakeRouter) -> None:
    router = make()
    decision = intent_decision(router)
    assert decision.margin is not None
    above = settings(router).model_copy(update={"margin": decision.margin + 1e-3})
    below = settings(router).model_copy(update={"margin": max(decision.margin - 1e-3, 0.0)})
    registry = router.loaded.registry
    dispatcher = NO_DISPATCHER
    assert LlmRouter(above, registry, dispatcher).applies(decision)
    assert not LlmRouter(below, registry, dispatcher).applies(decision)
    disabled = above.model_copy(update={"enabled": False})
    assert not LlmRouter(disabled, registry, dispatcher).applies(decision)


def test_never_for_rules_pinned_or_guarded_requests(make: MakeRouter) -> None:
    router = make(margin=1.0)
    registry = router.loaded.registry
    llm = LlmRouter(settings(router), registry, NO_DISPATCHER)
    ruled = router.decide(WEATHER, headers={"x-tenant": "acme"})
    assert ruled.layer == "rules" and not llm.applies(ruled)
    body = {"model": "weather", "messages": [{"role": "user", "content": WEATHER}]}
    pinned = plan_request(router, body, {}).decision
    assert pinned.layer == "pinned" and not llm.applies(pinned)
    decision = intent_decision(router)
    assert llm.applies(decision)
    blocked = replace(decision, safety=SafetyOutcome(profile="p", action="block"))
    assert not llm.applies(blocked)
    rerouted = replace(decision, safety=SafetyOutcome(profile="p", action="route", model="large"))
    assert not llm.applies(rerouted)


def test_default_below_threshold_applies_when_near(make: MakeRouter) -> None:
    near = make(margin=1.0, threshold=0.999)
    decision = near.decide(WEATHER)
    assert decision.layer == "default" and "below its threshold" in decision.reason
    registry = near.loaded.registry
    assert LlmRouter(settings(near), registry, NO_DISPATCHER).applies(decision)
    far = settings(near).model_copy(update={"margin": 0.0})
    assert not LlmRouter(far, registry, NO_DISPATCHER).applies(decision)
    empty = near.decide("   ")  # passes for an empty prompt: nothing to ask about
    assert not LlmRouter(settings(near), registry, NO_DISPATCHER).applies(empty)


# -- refine ------------------------------------------------------------------------------


def test_chosen_route_replaces_the_decision(make: MakeRouter, script: Script) -> None:
    router = make()
    decision = intent_decision(router)
    assert decision.route == "weather"
    script.replies[WEATHER] = '{"route": "cooking"}'
    outcomes: list[str] = []
    refined = run_with(
        router, lambda llm: llm.refine(decision, WEATHER), on_outcome=outcomes.append
    )
    assert (refined.route, refined.model, refined.layer) == ("cooking", "small", "llm_router")
    assert refined.confidence == 1.0 and refined.margin is None
    assert refined.id == decision.id and refined.registry_version == decision.registry_version
    assert refined.signals[:-1] == decision.signals
    signal = llm_signal(refined)
    assert signal.outcome is Outcome.DECIDED
    assert dict(signal.detail) == {"answer": "cooking", "outcome": "chosen"}
    assert signal.elapsed_us > 0
    assert outcomes == ["chosen"]
    # What was sent: the constrained answer, temperature 0, the routes and descriptions.
    (sent,) = script.requests
    assert sent["model"] == "up-picker" and sent["temperature"] == 0
    assert sent["max_tokens"] <= 32
    assert sent["response_format"] == response_format(("code", "weather", "cooking", "none"))
    schema = sent["response_format"]["json_schema"]
    assert schema["strict"] is True
    assert schema["schema"]["properties"]["route"]["enum"] == [
        "code",
        "weather",
        "cooking",
        "none",
    ]
    system = sent["messages"][0]["content"]
    assert "- code: programming, debugging and code review" in system
    assert '- weather: requests like "what is the weather tomorrow"' in system
    assert sent["messages"][-1] == {"role": "user", "content": WEATHER}


@pytest.mark.parametrize(
    ("reasoning", "sent_off"),
    [
        ("{param: enable_thinking}", {"chat_template_kwargs": {"enable_thinking": False}}),
        ("{effort: high}", {"reasoning_effort": "low"}),
        ("{param: thinking, budget_tokens: 2000}", {"thinking": {"type": "disabled"}}),
        ("{effort: high, turn_off: false}", {}),
    ],
)
def test_a_picker_that_thinks_is_asked_without_thinking(
    url: str, tmp_path: Path, script: Script, reasoning: str, sent_off: dict[str, Any]
) -> None:
    """Its 24 tokens leave no room for thinking: a Qwen3 that thinks by default (or an
    OpenAI reasoning model at its default effort) spends them all before it answers.
    Its thinking is turned off as for a request the gate finds not needed, with or
    without a ``reasoning`` section (this registry has one)."""
    text = REGISTRY % {"url": url, "margin": 1.0, "threshold": 0.3, "timeout": 5, "concurrency": 4}
    picker = "picker: {provider: fake, model: up-picker}"
    text = text.replace(picker, picker[:-1] + f", reasoning: {reasoning}}}")
    router = Router(
        parse_registry(text, source="t.yaml"), encoder=FakeEncoder(), cache_dir=tmp_path
    )
    decision = intent_decision(router)
    script.replies[WEATHER] = '{"route": "cooking"}'
    refined = run_with(router, lambda llm: llm.refine(decision, WEATHER))
    assert refined.route == "cooking"
    (sent,) = script.requests
    keys = ("chat_template_kwargs", "reasoning_effort", "thinking")
    assert {k: sent[k] for k in keys if k in sent} == sent_off
    assert sent["max_tokens"] <= 32 and sent["temperature"] == 0


@pytest.mark.parametrize(
    ("served", "effort"),
    [("gpt-5.1", "none"), ("gpt-5-mini-2025-08-07", "minimal"), ("o4-mini", "low")],
)
def test_a_picker_on_openai_is_sent_the_lowest_effort_its_model_takes(
    url: str, tmp_path: Path, script: Script, served: str, effort: str
) -> None:
    """``none`` on gpt-5.1 and later (no thinking at all), ``minimal`` on gpt-5, ``low``
    on the o-series, which refuse the other two with a 400."""
    text = REGISTRY % {"url": url, "margin": 1.0, "threshold": 0.3, "timeout": 5, "concurrency": 4}
    picker = "picker: {provider: fake, model: up-picker}"
    text = text.replace(picker, f"picker: {{provider: fake, model: {served}, reasoning: {{}}}}")
    router = Router(
        parse_registry(text, source="t.yaml"), encoder=FakeEncoder(), cache_dir=tmp_path
    )
    decision = intent_decision(router)
    script.replies[WEATHER] = '{"route": "cooking"}'
    assert run_with(router, lambda llm: llm.refine(decision, WEATHER)).route == "cooking"
    (sent,) = script.requests
    assert sent["model"] == served and sent["reasoning_effort"] == effort


def test_request_is_truncated_to_max_chars(make: MakeRouter, script: Script) -> None:
    router = make()
    decision = intent_decision(router)
    long_text = WEATHER + " " + "x" * 500
    run_with(router, lambda llm: llm.refine(decision, long_text))
    sent = script.requests[0]["messages"][-1]["content"]
    assert len(sent) < 120 and sent.startswith(WEATHER)


def test_none_means_the_default(make: MakeRouter, script: Script) -> None:
    router = make()
    decision = intent_decision(router, "write a python function to parse json")
    assert decision.route == "code"
    script.replies["python"] = '{"route": "none"}'
    refined = run_with(router, lambda llm: llm.refine(decision, "write a python function"))
    assert (refined.route, refined.model, refined.layer) == ("default", "small", "llm_router")


@pytest.mark.parametrize(
    "reply", ["garbage", '{"route": "Cooking"}', '{"route": "pizza"}', '{"x": 1}', "", "[1]"]
)
def test_garbage_keeps_the_decision(make: MakeRouter, script: Script, reply: str) -> None:
    router = make()
    decision = intent_decision(router)
    script.replies[WEATHER] = reply
    outcomes: list[str] = []
    kept = run_with(router, lambda llm: llm.refine(decision, WEATHER), on_outcome=outcomes.append)
    assert (kept.route, kept.model, kept.layer) == (decision.route, decision.model, "intent")
    assert kept.margin == decision.margin and kept.confidence == decision.confidence
    signal = llm_signal(kept)
    assert signal.outcome is Outcome.PASSED and signal.detail["outcome"] == "kept"
    assert outcomes == ["kept"]


@pytest.mark.parametrize("prompts", ["off", "hash", "redacted", "full"])
def test_an_unread_reply_is_stored_only_as_prompts_says(
    make: MakeRouter, script: Script, prompts: str
) -> None:
    """The model's reply it could not read may quote the request: the live decision
    (``--explain``) says it; the decision log's row only with ``telemetry.prompts:
    full``, as the prompt itself. A route it chose is stored whatever the mode."""
    router = make()
    decision = intent_decision(router)
    script.replies[WEATHER] = f"I think {WEATHER!r} is about the weather"
    kept = run_with(router, lambda llm: llm.refine(decision, WEATHER))
    assert "tomorrow" in llm_signal(kept).detail["answer"]
    script.replies["python"] = '{"route": "code"}'
    chosen = run_with(router, lambda llm: llm.refine(decision, "a python function"))
    unread = llm_signal(kept).detail["answer"]
    assert _stored_detail(kept, prompts) == {
        "answer": unread if prompts == "full" else None,
        "outcome": "kept",
    }
    assert _stored_detail(chosen, prompts) == {"answer": "code", "outcome": "chosen"}
    assert llm_signal(kept).detail["answer"] == unread  # the live decision: unchanged


def _stored_detail(decision: Decision, prompts: str) -> Any:
    """The LLM router's signal detail as the decision log's row stores it."""
    record = DecisionRecord(decision, 1.0, 200, 1.0, prompt_mode=prompts)  # type: ignore[arg-type]
    row = dict(zip(DECISION_COLUMNS, record.to_row(), strict=True))
    layers = json.loads(row["signals"])["layers"]
    return next(s["detail"] for s in layers if s["layer"] == LLM_ROUTER_LAYER)


def test_parse_answer_is_strict() -> None:
    names = ("code", "weather", "none")
    assert parse_answer('{"route": "code"}', names) == "code"
    assert parse_answer(' {"route":"none"}\n', names) == "none"
    assert parse_answer("weather", names) == "weather"
    assert parse_answer('"weather"', names) == "weather"
    assert parse_answer('```json\n{"route": "code"}\n```', names) == "code"
    for bad in ("Weather", "the weather route", '{"route": "pizza"}', '{"route": 1}', None):
        assert parse_answer(bad, names) is None


def test_timeout_keeps_the_decision_and_returns_in_time(make: MakeRouter, script: Script) -> None:
    timeout, delay = 0.3, 3.0
    router = make(timeout=timeout)
    decision = intent_decision(router)
    script.replies[WEATHER] = '{"route": "cooking"}'
    script.delays[WEATHER] = delay
    outcomes: list[str] = []

    async def timed(llm: LlmRouter) -> tuple[Decision, float]:
        start = time.perf_counter()
        refined = await llm.refine(decision, WEATHER)
        return refined, time.perf_counter() - start

    kept, elapsed = run_with(router, timed, on_outcome=outcomes.append)
    assert kept.route == "weather" and kept.layer == "intent"
    assert llm_signal(kept).detail["outcome"] == "timeout"
    assert outcomes == ["timeout"]
    assert elapsed < delay / 3  # the timeout fired, not the server's answer
    assert elapsed >= timeout * 0.9


def test_saturated_keeps_the_decision(make: MakeRouter, script: Script) -> None:
    router = make(concurrency=1)
    decision = intent_decision(router)
    script.replies[WEATHER] = '{"route": "cooking"}'
    script.delays[WEATHER] = 0.5
    outcomes: list[str] = []

    async def two(llm: LlmRouter) -> tuple[Decision, Decision]:
        first = asyncio.create_task(llm.refine(decision, WEATHER))
        while llm.in_flight == 0:
            await asyncio.sleep(0.001)
        second = await llm.refine(decision, WEATHER)
        return await first, second

    first, second = run_with(router, two, on_outcome=outcomes.append)
    assert first.route == "cooking" and first.layer == "llm_router"
    assert second.route == "weather" and llm_signal(second).detail["outcome"] == "saturated"
    assert sorted(outcomes) == ["chosen", "saturated"]
    assert len(script.requests) == 1


def test_error_keeps_the_decision(make: MakeRouter) -> None:
    router = make()
    decision = intent_decision(router)
    registry = router.loaded.registry
    dead = registry.model_copy(
        update={
            "providers": {
                "fake": registry.providers["fake"].model_copy(
                    update={"base_url": "http://127.0.0.1:9/v1"}
                )
            }
        }
    )

    async def main() -> Decision:
        dispatcher = Dispatcher(dead, build_providers(dead))
        try:
            return await LlmRouter(settings(router), dead, dispatcher).refine(decision, WEATHER)
        finally:
            await dispatcher.aclose()

    kept = asyncio.run(main())
    assert kept.route == "weather" and llm_signal(kept).detail["outcome"] == "error"


# -- guards and plans --------------------------------------------------------------------


def test_a_new_route_gets_its_reasoning_tier(make: MakeRouter, script: Script) -> None:
    router = make()
    text = "what is the weather tomorrow, step by step"
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    plan = plan_request(router, body, {})
    assert plan.decision.route == "weather" and plan.decision.reasoning is not None
    assert plan.decision.reasoning.needed and plan.decision.reasoning.tier is None
    script.replies["step by step"] = '{"route": "code"}'

    async def work(llm: LlmRouter) -> Any:
        return await refine_plan(llm, router, plan, body, {})

    new = run_with(router, work)
    decision = new.decision
    assert (decision.route, decision.layer) == ("code", "llm_router")
    assert decision.reasoning is not None and decision.reasoning.tier == "thinker"
    assert decision.model == "thinker"
    assert new.chain == ("thinker", "backup")
    assert new.policy is not None and new.policy.fallback == ("backup",)
    layers = [s.layer for s in decision.signals]
    assert layers.count("reasoning") == 1 and layers.count(LLM_ROUTER_LAYER) == 1
    assert layers.index(LLM_ROUTER_LAYER) < layers.index("reasoning")
    assert decision.id == plan.decision.id


def test_a_plan_refined_to_the_default_gets_the_defaults_chain(
    url: str, tmp_path: Path, script: Script
) -> None:
    """The LLM router answering "none" sends the request to the default: its target,
    then the default's fallbacks, with its policy (it was the target alone)."""
    values = {"url": url, "margin": 1.0, "threshold": 0.3, "timeout": 5.0, "concurrency": 4}
    text = (REGISTRY % values).replace(
        "default: {target: small}", "default: {target: small, policy: {fallback: [backup]}}"
    )
    router = Router(parse_registry(text), encoder=FakeEncoder(), cache_dir=tmp_path)
    body = {"model": "auto", "messages": [{"role": "user", "content": WEATHER}]}
    plan = plan_request(router, body, {})
    assert plan.decision.route == "weather"
    script.replies[WEATHER] = '{"route": "none"}'

    async def work(llm: LlmRouter) -> Any:
        return await refine_plan(llm, router, plan, body, {})

    new = run_with(router, work)
    assert (new.decision.route, new.decision.layer) == ("default", "llm_router")
    assert new.chain == ("small", "backup")
    assert new.policy is router.loaded.registry.default.policy


def test_refine_plan_keeps_a_plan_it_does_not_change(make: MakeRouter, script: Script) -> None:
    router = make(margin=0.0)
    body = {"model": "auto", "messages": [{"role": "user", "content": WEATHER}]}
    plan = plan_request(router, body, {})

    async def work(llm: LlmRouter) -> Any:
        return await refine_plan(llm, router, plan, body, {})

    assert run_with(router, work) is plan
    assert script.requests == []

    async def without(llm: LlmRouter) -> Any:
        return await refine_decision(None, router, plan.decision, body)

    assert run_with(router, without) is plan.decision


def test_metrics_counter() -> None:
    metrics = GatewayMetrics()
    metrics.llm_router("chosen")
    metrics.llm_router("chosen")
    metrics.llm_router("timeout")
    text = metrics.render()[0].decode()
    assert 'llmroute_llm_router_total{outcome="chosen"} 2.0' in text
    assert 'llmroute_llm_router_total{outcome="timeout"} 1.0' in text


def test_a_server_without_schema_mode_is_asked_plainly(make: MakeRouter, script: Script) -> None:
    router = make()
    decision = intent_decision(router)
    script.replies[WEATHER] = '{"route": "cooking"}'
    script.reject_schema = True

    async def twice(llm: LlmRouter) -> list[Decision]:  # two texts: no memo hit
        return [await llm.refine(decision, text) for text in (WEATHER, WEATHER + " please")]

    refined = run_with(router, twice)
    assert [d.route for d in refined] == ["cooking", "cooking"]
    assert ["response_format" in r for r in script.requests] == [True, False, False]


def test_anthropic_models_get_the_plain_prompt(make: MakeRouter) -> None:
    router = make()
    registry = router.loaded.registry
    claude = registry.model_copy(
        update={
            "providers": {
                **registry.providers,
                "claude": registry.providers["fake"].model_copy(update={"kind": "anthropic"}),
            },
            "models": {
                **registry.models,
                "picker": registry.models["picker"].model_copy(update={"provider": "claude"}),
            },
        }
    )
    names = ("code", "none")
    assert "response_format" in LlmRouter(settings(router), registry, NO_DISPATCHER).body(
        names, "x"
    )
    plain = LlmRouter(settings(router), claude, NO_DISPATCHER).body(names, "x")
    assert "response_format" not in plain
    assert '{"route": "<name>"}' in plain["messages"][0]["content"]


def test_top_k_lists_the_best_candidates(make: MakeRouter) -> None:
    router = make()
    decision = intent_decision(router)
    llm = LlmRouter(settings(router), router.loaded.registry, NO_DISPATCHER, top_k=2)
    names = llm.names(decision)
    assert names == (*(c.route for c in decision.candidates[:2]), "none")


def test_top_k_comes_from_the_registry_settings(make: MakeRouter) -> None:
    router = make()
    decision = intent_decision(router)
    from_registry = settings(router).model_copy(update={"top_k": 2})
    llm = LlmRouter(from_registry, router.loaded.registry, NO_DISPATCHER)
    assert llm.names(decision) == (*(c.route for c in decision.candidates[:2]), "none")
    assert (
        len(LlmRouter(settings(router), router.loaded.registry, NO_DISPATCHER).names(decision))
        == len(router.loaded.registry.routes) + 1
    )


def test_top_k_below_two_is_a_registry_error_naming_line_and_field() -> None:
    text = REGISTRY % {
        "url": "http://127.0.0.1:9/v1",
        "margin": 0.1,
        "threshold": 0.3,
        "timeout": 1.0,
        "concurrency": 1,
    }
    with pytest.raises(ConfigError) as info:
        parse_registry(text + "  top_k: 1\n", source="t.yaml")
    message = str(info.value)
    assert "t.yaml" in message and "llm_fallback.top_k" in message
    assert f":{text.count(chr(10)) + 1}" in message


def test_a_repeated_request_is_decided_from_the_memo(make: MakeRouter, script: Script) -> None:
    """The model's verdict on a request is reused for the same text and offered routes:
    one call, the second decision says ``memo``. Failures are not remembered, and
    another text is asked again."""
    router = make()
    decision = intent_decision(router)
    script.replies[WEATHER] = '{"route": "cooking"}'
    outcomes: list[str] = []

    async def work(llm: LlmRouter) -> list[Decision]:
        first = await llm.refine(decision, WEATHER)
        again = await llm.refine(decision, WEATHER)
        other = await llm.refine(decision, WEATHER + " in rome")
        return [first, again, other]

    first, again, other = run_with(router, work, on_outcome=outcomes.append)
    assert [d.route for d in (first, again, other)] == ["cooking"] * 3
    assert again.layer == "llm_router" and again.id == decision.id
    assert dict(llm_signal(again).detail) == {"answer": "cooking", "outcome": "memo"}
    assert outcomes == ["chosen", "memo", "chosen"]
    assert len(script.requests) == 2

    script.requests.clear()
    script.replies[WEATHER] = "garbage"
    kept: list[str] = []

    async def unparseable(llm: LlmRouter) -> None:
        for _ in range(2):
            await llm.refine(decision, WEATHER)

    run_with(router, unparseable, on_outcome=kept.append)
    assert kept == ["kept", "kept"] and len(script.requests) == 2


def test_the_memo_expires_forgets_the_oldest_and_can_be_off(
    make: MakeRouter, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = make()
    decision = intent_decision(router)
    script.replies[WEATHER] = '{"route": "cooking"}'
    base = settings(router)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def calls(settings_: LlmFallback, texts: list[str], step: float = 0.0) -> int:
        script.requests.clear()

        async def work(llm: LlmRouter) -> None:
            for text in texts:
                await llm.refine(decision, text)
                clock[0] += step

        async def main() -> None:
            registry = router.loaded.registry
            dispatcher = Dispatcher(registry, build_providers(registry))
            try:
                await work(LlmRouter(settings_, registry, dispatcher))
            finally:
                await dispatcher.aclose()

        asyncio.run(main())
        return len(script.requests)

    a, b, c = WEATHER, WEATHER + " b", WEATHER + " c"
    short = base.model_copy(update={"memo_ttl_s": 10.0})
    assert calls(short, [a, a, a], step=6.0) == 2  # the third comes 12 s after the first
    two = base.model_copy(update={"memo": 2})
    assert calls(two, [a, b, c, a]) == 4  # a was the oldest of three: forgotten
    assert calls(two, [a, b, a, c, a]) == 3  # a was used again, so b went
    off = base.model_copy(update={"memo": 0})
    assert calls(off, [a, a]) == 2


# -- text the encoder does not read ------------------------------------------------------

RAIN_ZH = "明天巴黎会下雨吗"  # will it rain in Paris tomorrow


def latin_router(url: str, tmp_path: Path, margin: float) -> Router:
    """The test registry whose encoder reads Latin only (as the built-ins declare)."""
    text = REGISTRY % {
        "url": url,
        "margin": margin,
        "threshold": 0.3,
        "timeout": 5.0,
        "concurrency": 4,
    }
    text = text.replace(
        "encoder: builtin:static", "encoder: {kind: builtin, name: static, scripts: [latin]}"
    )
    return Router(parse_registry(text, source="t.yaml"), encoder=FakeEncoder(), cache_dir=tmp_path)


def test_text_in_a_script_the_encoder_does_not_read_is_asked_of_every_route(
    url: str, tmp_path: Path, script: Script
) -> None:
    """The intent layer did not score it, so the LLM router is asked whatever its margin,
    and offered every route even with top_k (the layer has no candidates to trust)."""
    router = latin_router(url, tmp_path, margin=0.0)
    decision = router.decide(RAIN_ZH)
    assert decision.layer == "default" and not decision.candidates
    assert decision.reason == (
        "default: text mostly in a script the encoder does not read (Han 100% of the letters)"
    )
    registry = router.loaded.registry
    llm = LlmRouter(settings(router), registry, NO_DISPATCHER, top_k=2)
    assert llm.applies(decision)
    assert llm.names(decision) == ("code", "weather", "cooking", "none")
    off = settings(router).model_copy(update={"enabled": False})
    assert not LlmRouter(off, registry, NO_DISPATCHER).applies(decision)
    # English text on the same router: margin 0 never asks
    english = router.decide(WEATHER)
    assert english.layer == "intent" and not llm.applies(english)

    script.replies[RAIN_ZH] = '{"route": "weather"}'
    refined = run_with(router, lambda llm: llm.refine(decision, RAIN_ZH), top_k=2)
    assert (refined.route, refined.model, refined.layer) == ("weather", "small", "llm_router")
    (sent,) = script.requests
    assert sent["messages"][-1] == {"role": "user", "content": RAIN_ZH}
    enum = sent["response_format"]["json_schema"]["schema"]["properties"]["route"]["enum"]
    assert enum == ["code", "weather", "cooking", "none"]
