"""A cascade gate's model call cut by the gate's own time limit (`GATE_TIMEOUT_S`, made
small here) had sent its prompt: it is charged then, once, as a cut call is (its prompt
estimated, no answer), to the judge's budget and in the request's usage; a request cut
later does not pay it again. Against a real fake upstream on 127.0.0.1 whose judge
answers after 5 s."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from fake_upstream import FakeUpstream, fake_upstream

import llmroute.dispatch.cascade as cascade_module
from llmroute.decision import Decision
from llmroute.dispatch import Dispatcher, Plan, Served
from llmroute.dispatch.budgets import model_account
from llmroute.dispatch.cascade import run_gates
from llmroute.dispatch.spend import Spend, tracked
from llmroute.dispatch.usage import Usage
from llmroute.gates.base import GateVerdict, TierAnswer
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  small: {provider: up, model: small}
  large: {provider: up, model: large}
  %(judge)s:
    provider: up
    model: '%(judge)s?delay=5'
    price: {input: 1000, output: 1000}
    budget: {usd: 100, period: day}
routes:
  - name: r
    examples: [hello]
    target: small
    cascade: {tiers: [small, large], gates: [{kind: verifier, model: %(judge)s}]}
default: {target: large}
dispatch:
  retries: {attempts: 0}
  breaker: {enabled: false}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


@pytest.fixture(autouse=True)
def short_gates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cascade_module, "GATE_TIMEOUT_S", 0.3)


def _registry(upstream: FakeUpstream) -> tuple[Registry, str]:
    """The registry and its judge's name: budgets in memory are the process's, by model
    name, so each test names its judge anew."""
    judge = f"judge_{uuid.uuid4().hex[:8]}"
    return parse_registry(REGISTRY % {"url": upstream.url, "judge": judge}).registry, judge


def _plan(reg: Registry) -> Plan:
    decision = Decision("d", "r", "small", "test", 1.0, None, "test", "v", (), 0.0, 0.0)
    return Plan(decision, ("small",), None, reg.route("r").cascade)


BODY = {"messages": [{"role": "user", "content": "capital of France? " * 20}]}


def test_a_judge_call_the_gate_timeout_cut_is_charged_its_prompt(upstream: FakeUpstream) -> None:
    reg, judge = _registry(upstream)
    spend = Spend()

    async def main() -> tuple[Served, float]:
        dispatcher = Dispatcher(reg, build_providers(reg))
        try:
            with tracked(spend):
                served = await dispatcher.complete(_plan(reg), dict(BODY))
            assert dispatcher.limits is not None
            return served, await dispatcher.limits.spent(model_account(judge), "day")
        finally:
            await dispatcher.aclose()

    served, spent = asyncio.run(main())
    assert served.model == "large"
    assert served.attempts == ("small escalated: verifier (timeout)",)
    (verdict,) = served.cascade[0].verdicts
    cut = verdict.usage
    assert isinstance(cut, Usage)
    assert cut.prompt_tokens > 0 and cut.completion_tokens == 0 and cut.estimated
    assert spent == pytest.approx(cut.cost_usd) and spent > 0  # the judge's budget
    # the request's usage holds it, and the request counts it once, under the judge
    assert served.cascade[0].usage is not None
    assert served.cascade[0].usage.prompt_tokens > cut.prompt_tokens  # the tier's call too
    assert served.usage.prompt_tokens >= cut.prompt_tokens
    assert not spend.unanswered
    assert spend.paid_to.count(judge) == 1


def test_a_request_cut_after_the_gate_timed_out_pays_the_judge_once(
    upstream: FakeUpstream,
) -> None:
    """Cut on its last tier (its caller cancels it), after the gate gave up on the
    judge: the judge's prompt charged when the gate gave up is not charged again."""
    reg, judge = _registry(upstream)
    slow = f"slow_{uuid.uuid4().hex[:8]}"  # the last tier's upstream model, named anew
    reg = parse_registry(
        REGISTRY.replace("model: large}", f"model: '{slow}?delay=5'}}")
        % {"url": upstream.url, "judge": judge}
    ).registry
    spend = Spend()

    async def main() -> tuple[Usage | None, float]:
        dispatcher = Dispatcher(reg, build_providers(reg))
        try:
            with tracked(spend):
                task = asyncio.ensure_future(dispatcher.complete(_plan(reg), dict(BODY)))
                while not any(m.startswith(slow) for m in upstream.models_called()):
                    await asyncio.sleep(0.02)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            total = await dispatcher.charge_abandoned(spend)
            assert dispatcher.limits is not None
            return total, await dispatcher.limits.spent(model_account(judge), "day")
        finally:
            await dispatcher.aclose()

    total, spent = asyncio.run(main())
    judged = [u for m, u in zip(spend.paid_to, spend.answered, strict=True) if m == judge]
    assert len(judged) == 1 and spent == pytest.approx(judged[0].cost_usd) and spent > 0
    assert [name for name, _ in spend.cut] == ["large"]  # only the last tier's call was cut
    assert total is not None
    paid = [*spend.answered, spend.cut[0][1]]
    assert total.prompt_tokens == sum(u.prompt_tokens for u in paid)


class _RaisesAfterItsCall:
    """A gate whose model call is answered (and paid: the model's budget, the request's
    spend), then raises, as a gate's bug on an odd answer does (the verifier's P(yes) of
    a first token whose logprob is 1000 was an OverflowError until the gate read it as a
    malformed answer)."""

    name = "raises"

    def __init__(self, dispatcher: Dispatcher, reg: Registry) -> None:
        self.dispatcher, self.reg = dispatcher, reg

    async def check(self, request: dict[str, object], answer: TierAnswer) -> GateVerdict:
        decision = Decision("d", "r", "small", "test", 1.0, None, "test", "v", (), 0.0, 0.0)
        await self.dispatcher.complete_chain(Plan(decision, ("small",)), dict(BODY))
        raise ValueError("the judge's answer could not be read")


def test_a_gate_that_raises_after_its_model_call_keeps_what_the_call_cost(
    upstream: FakeUpstream,
) -> None:
    """Its rejection's verdict holds the cost of the call it made (as a timed-out gate's
    does), so the tier's step, and the request's usage summed from the steps, count it:
    it held none, and the request's usage (its row, its key's budget) left out a call
    its model's budget and the request's spend had counted."""
    reg, _ = _registry(upstream)
    spend = Spend()
    answer = TierAnswer({"choices": []}, "Paris", "stop", "small")

    async def main() -> GateVerdict:
        dispatcher = Dispatcher(reg, build_providers(reg))
        try:
            with tracked(spend):
                gate = _RaisesAfterItsCall(dispatcher, reg)
                (verdict,) = await run_gates([gate], dict(BODY), answer, dispatcher)
                return verdict
        finally:
            await dispatcher.aclose()

    verdict = asyncio.run(main())
    assert (verdict.accept, verdict.reason) == (False, "error (ValueError)")
    assert spend.paid_to == ["small"]  # the call was answered and counted
    assert verdict.usage == spend.answered[0]
