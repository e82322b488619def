"""What a request its caller abandons is charged (`llmroute.dispatch.spend`), against a
real fake upstream on 127.0.0.1: the prompt of the call that was in flight, on the
model it had been sent to (a fallback, a cascade's second tier), the answers it had
already got, and nothing for a request cancelled between calls."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fake_upstream import FakeUpstream, fake_upstream
from plans import plan_for

from llmroute.dispatch import Dispatcher, Plan
from llmroute.dispatch.spend import (
    BUG,
    CANCELLED,
    Spend,
    cancelled_on,
    cut_after,
    ending_of,
    noted_cut,
    paid_by_model,
    tracked,
)
from llmroute.dispatch.usage import Usage, priced
from llmroute.errors import ProviderError
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Price, Registry

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
%(models)s
routes:
  - name: r
    examples: [hello]
    target: %(first)s
    cascade: %(cascade)s
default: {target: %(first)s}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01}
  breaker: {enabled: false}
"""

BODY = {"messages": [{"role": "user", "content": "please summarise these notes for me"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def _registry(upstream: FakeUpstream, models: dict[str, str], cascade: str = "null") -> Registry:
    """`models`: name -> the upstream model string; each priced and with a budget
    (budgets are counted per model name, process-wide: names carry a fresh tag)."""
    lines = [
        f"  {name}: {{provider: up, model: '{upstream_model}', "
        "price: {input: 1000000, output: 1000000}, budget: {usd: 1000000000, period: day}}"
        for name, upstream_model in models.items()
    ]
    text = REGISTRY % {
        "url": upstream.url,
        "models": "\n".join(lines),
        "first": next(iter(models)),
        "cascade": cascade,
    }
    return parse_registry(text).registry


async def _abandoned(
    dispatcher: Dispatcher, plan: Plan, after_s: float
) -> tuple[Usage | None, Spend]:
    """Start the request, cancel it after `after_s` as the gateway does when the client
    hangs up, and charge what it had cost."""
    spend = Spend()

    async def request() -> None:
        with tracked(spend):
            await dispatcher.complete(plan, dict(BODY))

    call = asyncio.ensure_future(request())
    await asyncio.sleep(after_s)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    return await dispatcher.charge_abandoned(spend), spend


async def _spent(dispatcher: Dispatcher, *names: str) -> list[float]:
    assert dispatcher.limits is not None
    return [await dispatcher.limits.spent(f"budget:{name}", "day") for name in names]


def _prompt_cost(body: dict[str, Any] = BODY) -> Usage:
    """`body`'s prompt, counted, at the models' price."""
    return priced({}, body, Price(input=1000000, output=1000000), completion="")


def test_a_call_cut_on_a_fallback_is_charged_to_the_fallback(upstream: FakeUpstream) -> None:
    """The first model fails at once, the fallback is slow and the client leaves: the
    prompt was sent to the fallback, so that is the model charged (not the first)."""
    tag = uuid.uuid4().hex[:8]
    first, fallback = f"first-{tag}", f"fallback-{tag}"
    reg = _registry(upstream, {first: f"{first}?status=500", fallback: f"{fallback}?delay=5"})

    async def go() -> tuple[Usage | None, Spend, list[float]]:
        dispatcher = Dispatcher(reg, build_providers(reg), rng=random.Random(1))
        try:
            usage, spend = await _abandoned(dispatcher, plan_for(first, fallback), 0.5)
            return usage, spend, await _spent(dispatcher, first, fallback)
        finally:
            await dispatcher.aclose()

    usage, spend, (first_spent, fallback_spent) = asyncio.run(go())
    expected = _prompt_cost()
    assert usage is not None and usage.estimated and usage.completion_tokens == 0
    assert usage.prompt_tokens == expected.prompt_tokens
    assert usage.cost_usd == pytest.approx(expected.cost_usd)
    assert first_spent == 0.0  # it failed: nothing billed
    assert fallback_spent == pytest.approx(expected.cost_usd)
    assert [model for model, _ in spend.unanswered.values()] == [fallback]
    # and the metrics count it under the fallback, not the decided (first) model
    assert spend.cut == [(fallback, usage)]
    assert paid_by_model(spend, None, usage) == ((fallback, usage),)
    # and its log row's attempt path: the first model's failure, then the cut fallback
    failed, cut = spend.tried
    assert failed.startswith(f"{first} via up (") and "500" in failed
    assert cut == f"{fallback} via up (cancelled)"


def test_a_cascade_cut_on_its_second_tier_counts_the_first_tiers_answer(
    upstream: FakeUpstream,
) -> None:
    """The first tier answered (cut off: escalated) and was charged then; the second
    tier is slow and the client leaves. The request cost the first answer and the
    second tier's prompt: the first model is not charged twice, the second is charged
    its prompt."""
    tag = uuid.uuid4().hex[:8]
    small, large = f"small-{tag}", f"large-{tag}"
    reg = _registry(
        upstream,
        {small: f"{small}?finish=length", large: f"{large}?delay=5"},
        cascade=f"[{small}, {large}]",
    )
    route = reg.route("r")

    async def go() -> tuple[Usage | None, Spend, list[float]]:
        dispatcher = Dispatcher(reg, build_providers(reg), rng=random.Random(1))
        plan = plan_for(small, policy=route.policy, cascade=route.cascade)
        try:
            usage, spend = await _abandoned(dispatcher, plan, 0.8)
            return usage, spend, await _spent(dispatcher, small, large)
        finally:
            await dispatcher.aclose()

    usage, spend, (small_spent, large_spent) = asyncio.run(go())
    assert len(spend.answered) == 1
    first_answer = spend.answered[0]
    assert not first_answer.estimated and first_answer.completion_tokens > 0
    assert small_spent == pytest.approx(first_answer.cost_usd)  # once, when it answered
    cut = _prompt_cost()
    assert large_spent == pytest.approx(cut.cost_usd)
    assert usage is not None and usage.estimated
    assert usage.prompt_tokens == first_answer.prompt_tokens + cut.prompt_tokens
    assert usage.completion_tokens == first_answer.completion_tokens
    assert usage.cost_usd == pytest.approx(first_answer.cost_usd + cut.cost_usd)
    # the attempt path: the first tier escalated from, then the second, cut on its call
    escalated, cut_on = spend.tried
    assert escalated.startswith(f"{small} escalated: ")
    assert cut_on == f"{large} via up (cancelled)"
    # for the metrics, each under the model charged it: the cut prompt under the second
    split = dict(paid_by_model(spend, None, usage))
    assert split.keys() == {small, large} and split[small] == first_answer
    assert split[large].prompt_tokens == cut.prompt_tokens and split[large].estimated


def test_a_request_cut_while_waiting_to_retry_owes_nothing(upstream: FakeUpstream) -> None:
    """The only call failed (503, Retry-After: 3) and the client leaves during the wait:
    no prompt is in flight and nothing answered, so nothing is charged."""
    tag = uuid.uuid4().hex[:8]
    name = f"busy-{tag}"
    busy = f"{name}?status=503&retry_after=3"
    reg = _registry(upstream, {name: busy})

    async def go() -> tuple[Usage | None, Spend, list[float]]:
        dispatcher = Dispatcher(reg, build_providers(reg), rng=random.Random(1))
        try:
            usage, spend = await _abandoned(dispatcher, plan_for(name), 0.5)
            return usage, spend, await _spent(dispatcher, name)
        finally:
            await dispatcher.aclose()

    usage, spend, spent = asyncio.run(go())
    assert usage is None
    assert spent == [0.0]
    assert upstream.counts[busy] == 1  # the one failed call; the retry never went
    # cut on its first (only) model: no fallback, no attempt path, as a refusal there
    assert spend.tried == () and spend.cut_on == f"{name} via up (cancelled)"


def test_calls_outside_tracked_are_not_counted(upstream: FakeUpstream) -> None:
    """Only a request that asked (`tracked`) is counted: a later untracked one leaves a
    finished spend unchanged."""
    tag = uuid.uuid4().hex[:8]
    name = f"plain-{tag}"
    reg = _registry(upstream, {name: name})

    async def go() -> tuple[Spend, int]:
        dispatcher = Dispatcher(reg, build_providers(reg), rng=random.Random(1))
        spend = Spend()
        try:
            with tracked(spend):
                await dispatcher.complete(plan_for(name), dict(BODY))
            await dispatcher.complete(plan_for(name), dict(BODY))
        finally:
            await dispatcher.aclose()
        return spend, len(spend.unanswered)

    spend, unanswered = asyncio.run(go())
    assert len(spend.answered) == 1 and unanswered == 0


def test_paid_by_model_splits_a_requests_usage_by_who_spent_it() -> None:
    """Each answer counted under its own model; the rest of the total (a stream's own,
    charged as it ended) under the served one; nothing made when it spent it all."""
    small, judge, large = (
        Usage(3, 3, 9e-6, False),
        Usage(5, 1, 1e-6, False),
        Usage(3, 3, 9e-5, True),
    )
    spend = Spend()
    for model, usage in (("small", small), ("judge", judge)):
        spend.answered.append(usage)
        spend.paid_to.append(model)
    total = Usage(11, 7, round(9e-6 + 1e-6 + 9e-5, 10), True)
    assert dict(paid_by_model(spend, "large", total)) == {
        "small": small,
        "judge": judge,
        "large": large,
    }
    assert dict(paid_by_model(spend, None, total)) == {"small": small, "judge": judge}
    served_alone = Spend([large], ["large"])
    assert paid_by_model(served_alone, "large", large) == ()
    assert paid_by_model(Spend(), "large", large) == ()
    # calls cut by a cancellation: each under the model it was sent to
    cut = Usage(40, 0, 4e-5, True)
    abandoned = Spend([small], ["small"], cut=[("large", cut)])
    both = Usage(43, 3, round(9e-6 + 4e-5, 10), True)
    assert dict(paid_by_model(abandoned, None, both)) == {"small": small, "large": cut}
    assert paid_by_model(Spend(cut=[("large", cut)]), "large", cut) == ()
    # the served model's answers alone, however many (a retried gate, a tier kept):
    # nothing to split; an unserved request's (None) is split whatever answered
    assert paid_by_model(Spend([large, large], ["large", "large"]), "large", total) == ()
    assert dict(paid_by_model(Spend([large], ["large"]), None, large)) == {"large": large}
    assert paid_by_model(Spend(), None, large) == ()
    assert dict(paid_by_model(spend, "small", total)).keys() == {"small", "judge"}


def test_a_cut_or_a_bug_is_noted_as_it_ended_and_found_so() -> None:
    """A cancel ends an attempt ``(cancelled)``, a bug ``(internal_error)``; an error of
    ours, or an exit, none (its own attempts say it). `noted_cut` finds the entry only
    for the model and the ending asked: a cascade's tier ended by a bug does not take
    an earlier cancelled call of the same model (a gate's, timed out) as its own."""
    assert ending_of(asyncio.CancelledError()) == CANCELLED
    assert ending_of(RuntimeError("a bug")) == BUG
    assert ending_of(ProviderError("up", "down")) is None
    assert ending_of(KeyboardInterrupt()) is None
    spend = Spend()
    with tracked(spend):
        cut_after(["a via up (502 bad gateway)"], cancelled_on("b", "up"))
        assert spend.tried == ("a via up (502 bad gateway)", "b via up (cancelled)")
        assert noted_cut("b") == "b via up (cancelled)"
        assert noted_cut("b", BUG) is None and noted_cut("bb") is None
        cut_after([], cancelled_on("b", "up", BUG))
        assert spend.tried == () and noted_cut("b", BUG) == "b via up (internal_error)"
