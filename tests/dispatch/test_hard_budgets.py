"""Hard budgets (``budget.hard``): each call holds its worst case in its model's budget
(and its paying client key's) while it runs, so concurrent calls see each other and the
budget is never passed. The worst case; the registry's checks; and dispatch against a
real HTTP upstream: concurrent calls, failures, streams, a cancelled call (with a key
paying), two dispatchers sharing Redis, and the gateway's 503. Elsewhere: the holds
themselves, in memory and Redis (tests/state/test_limits.py), and a key's hard budget
through the gateway (tests/server/test_key_hard_budgets.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve
from plans import plan_for
from prometheus_client.parser import text_string_to_metric_families
from redis_service import REDIS_URL

from llmroute.dispatch import Dispatcher
from llmroute.dispatch.budgets import IMAGE_TOKENS, Payer, paid_by, worst_case
from llmroute.dispatch.spend import Spend, tracked
from llmroute.dispatch.text_completions import TextRequest, chat_content
from llmroute.dispatch.usage import prompt_tokens, prompt_tokens_at_most
from llmroute.errors import AllFallbacksFailed, ConfigError, ProviderError
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.registry.schema import Budget, Model, Provider
from llmroute.state.limits import SETTLED_KEPT_S

# -- the worst case -----------------------------------------------------------------------

_OPENAI = Provider(kind="openai", base_url="http://127.0.0.1:9/v1")
_ANTHROPIC = Provider(kind="anthropic", base_url="http://127.0.0.1:9")
_PRICE = {"input": 2.0, "output": 8.0}
_HELLO = {"messages": [{"role": "user", "content": "hello there"}]}


def _model(**fields: Any) -> Model:
    return Model(model="x", provider="up", price=_PRICE, **fields)


def _prompt(body: dict[str, Any]) -> int:
    return prompt_tokens_at_most(body)


@pytest.mark.parametrize(
    ("body", "fields", "provider", "answer"),
    [
        ({**_HELLO, "max_tokens": 300}, {"max_output_tokens": 1000}, _OPENAI, 300),
        ({**_HELLO, "max_completion_tokens": 200, "max_tokens": 900}, {}, _OPENAI, 200),
        (_HELLO, {"max_output_tokens": 1000, "context_window": 100_000}, _OPENAI, 1000),
        ({**_HELLO, "max_tokens": 5000}, {"max_output_tokens": 1000}, _OPENAI, 1000),
        (_HELLO, {"context_window": 4000}, _OPENAI, 4000 - _prompt(_HELLO)),
        (_HELLO, {}, _ANTHROPIC, 4096),  # the default llmroute sends Anthropic
        ({**_HELLO, "max_tokens": 300, "n": 3}, {}, _OPENAI, 900),
    ],
)
def test_the_worst_case_bounds_the_answer_by_what_is_set(
    body: dict[str, Any], fields: dict[str, Any], provider: Provider, answer: int
) -> None:
    worst = worst_case(body, _model(**fields), provider)
    assert (worst.prompt_tokens, worst.answer_tokens) == (_prompt(_HELLO), answer)
    assert worst.usd == pytest.approx((worst.prompt_tokens * 2.0 + answer * 8.0) / 1e6)


def test_the_worst_case_counts_images_and_the_prompt_generously() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    text = "summarise the attached chart in three short bullet points " * 20
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}, image, image]}],
        "max_tokens": 10,
    }
    worst = worst_case(body, _model(), _OPENAI)
    assert worst.prompt_tokens == _prompt(body) + 2 * IMAGE_TOKENS
    assert _prompt(body) >= 1.5 * prompt_tokens(body) > 200  # English: about twice
    cjk = {"messages": [{"role": "user", "content": "北京是中国的首都。" * 30}], "max_tokens": 1}
    assert _prompt(cjk) >= prompt_tokens(cjk)
    assert "at worst" in worst.describe()


# -- the registry -------------------------------------------------------------------------

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  claude: {kind: anthropic, base_url: "%(url)s"}
models:
%(models)s
routes:
  - {name: r, examples: [hello], target: %(first)s}
default: {target: %(first)s}
dispatch:
  retries: {attempts: 0}
%(extra)s
"""


def _registry(url: str, models: str, first: str, extra: str = "") -> str:
    return REGISTRY % {"url": url, "models": models, "first": first, "extra": extra}


def test_a_hard_budget_needs_a_bound_on_answers() -> None:
    url = "http://127.0.0.1:9/v1"
    unbounded = "  m: {provider: up, model: x, budget: {usd: 5, hard: true}}"
    with pytest.raises(ConfigError, match=r"models\.m\.budget\.hard: a hard budget .* max_output"):
        parse_registry(_registry(url, unbounded, "m"))
    for bound in ("max_output_tokens: 8192", "context_window: 128000", "params: {max_tokens: 9}"):
        parse_registry(_registry(url, unbounded.replace("model: x", f"model: x, {bound}"), "m"))
    parse_registry(_registry(url, unbounded.replace("up", "claude"), "m"))  # always bounded
    soft = "  m: {provider: up, model: x, budget: {usd: 5}}"
    parse_registry(_registry(url, soft, "m"))
    keyed = "auth: {keys: [{name: a, key_env: A_KEY, budget: {usd: 5, hard: true}}]}"
    with pytest.raises(ConfigError, match=r"auth\.keys\[0\]\.budget\.hard: .* m has none"):
        parse_registry(_registry(url, soft, "m", keyed))  # m may be reached by the key
    bounded = soft.replace("model: x", "model: x, max_output_tokens: 8")
    parse_registry(_registry(url, bounded, "m", keyed))


def test_an_embedding_models_worst_case_is_its_input() -> None:
    model = Model(model="e", provider="up", kind="embedding", price={"input": 100})
    worst = worst_case({"input": ["héllo", "world", [1, 2, 3]]}, model, _OPENAI)
    assert (worst.prompt_tokens, worst.answer_tokens) == (3 + 3 + 3, 0)
    assert worst.usd == pytest.approx(9 * 100 / 1e6)


# -- dispatch -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def _pricey(tag: str, usd: float, *, hard: bool = True, faults: str = "delay=0.5") -> str:
    """A model at $1,000 per million tokens whose worst case for a short request with
    ``max_tokens: 100`` is about $0.11, and the fake upstream's answers (3 + 3 tokens)
    cost $0.006; then a free fallback. Budgets are counted per model name, process-wide:
    the name is the test's own."""
    return f"""
  pricey-{tag}:
    provider: up
    model: 'pricey-{tag}?{faults}'
    price: {{input: 1000, output: 1000}}
    max_output_tokens: 4096
    budget: {{usd: {usd}, period: day, hard: {str(hard).lower()}}}
  cheap: {{provider: up, model: cheap-{tag}}}
"""


_BODY = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}
_ANSWER_USD = 6 * 1000 / 1e6


def _worst(registry_text: str, tag: str, body: dict[str, Any] = _BODY) -> float:
    registry = parse_registry(registry_text).registry
    return worst_case(body, registry.models[f"pricey-{tag}"], registry.providers["up"]).usd


async def _spent(dispatcher: Dispatcher, tag: str) -> float:
    assert dispatcher.limits is not None
    return round(await dispatcher.limits.spent(f"budget:pricey-{tag}", "day"), 9)


@pytest.mark.parametrize("hard", [True, False])
def test_concurrent_calls_never_pass_a_hard_budget(upstream: FakeUpstream, hard: bool) -> None:
    """Five calls at once to a model that takes half a second, with room for two worst
    cases: under a hard budget two are sent and three go to the fallback, and once they
    have answered their holds are replaced by what they cost; a soft budget, read before
    any has cost anything, sends all five (and is passed by what they cost)."""
    tag = uuid.uuid4().hex[:8]
    text = _registry(upstream.url, _pricey(tag, 0.25, hard=hard), f"pricey-{tag}")
    worst = _worst(text, tag)
    assert 2 * worst <= 0.25 < 3 * worst  # room for two
    registry = parse_registry(text).registry

    async def go() -> tuple[list[str], float, list[str]]:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        plan = plan_for(f"pricey-{tag}", "cheap")
        try:
            first = await asyncio.gather(*(dispatcher.complete(plan, _BODY) for _ in range(5)))
            spent = await _spent(dispatcher, tag)
            then = await asyncio.gather(*(dispatcher.complete(plan, _BODY) for _ in range(2)))
            return sorted(s.model for s in first), spent, [s.model for s in then]
        finally:
            await dispatcher.aclose()

    served, spent, then = asyncio.run(go())
    pricey = f"pricey-{tag}"
    if hard:
        assert served == ["cheap"] * 3 + [pricey] * 2
        assert spent == pytest.approx(2 * _ANSWER_USD)
        assert then == [pricey, pricey]  # what they really cost leaves room again
    else:
        assert served == [pricey] * 5 and spent == pytest.approx(5 * _ANSWER_USD)


def test_a_failed_call_takes_its_hold_back(upstream: FakeUpstream) -> None:
    tag = uuid.uuid4().hex[:8]
    text = _registry(upstream.url, _pricey(tag, 1.0, faults="status=500&times=1"), f"pricey-{tag}")
    registry = parse_registry(text).registry

    async def go() -> tuple[str, float, str, float]:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        plan = plan_for(f"pricey-{tag}", "cheap")
        try:
            failed_over = await dispatcher.complete(plan, _BODY)
            after_failure = await _spent(dispatcher, tag)
            served = await dispatcher.complete(plan, _BODY)
            return failed_over.model, after_failure, served.model, await _spent(dispatcher, tag)
        finally:
            await dispatcher.aclose()

    assert asyncio.run(go()) == ("cheap", 0.0, f"pricey-{tag}", pytest.approx(_ANSWER_USD))


def test_a_stream_holds_its_worst_case_until_it_ends(upstream: FakeUpstream) -> None:
    """Room for one worst case: while a slow stream runs, the next request goes to the
    fallback; once the stream has ended, it has cost what it streamed and the model
    serves again."""
    tag = uuid.uuid4().hex[:8]
    text = _registry(upstream.url, _pricey(tag, 0.15, faults="gap=0.2"), f"pricey-{tag}")
    assert _worst(text, tag) <= 0.15 < 2 * _worst(text, tag)
    registry = parse_registry(text).registry
    body = {**_BODY, "messages": [{"role": "user", "content": "hello there friend"}]}

    async def go() -> tuple[str, float, str, float, str]:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        plan = plan_for(f"pricey-{tag}", "cheap")
        try:
            opened = await dispatcher.open_stream(plan, {**body, "stream": True})
            held = await _spent(dispatcher, tag)
            meanwhile = await dispatcher.complete(plan, _BODY)
            async for _event in opened.events:
                pass
            assert opened.usage is not None
            cost = opened.usage.cost_usd
            after = await _spent(dispatcher, tag)
            served = await dispatcher.complete(plan, _BODY)
            return opened.model, held, meanwhile.model, after - cost, served.model
        finally:
            await dispatcher.aclose()

    opened, held, meanwhile, left, served = asyncio.run(go())
    assert opened == served == f"pricey-{tag}" and meanwhile == "cheap"
    assert held == pytest.approx(_worst(text, tag, body)) and left == pytest.approx(0.0)


def test_a_cancelled_call_owes_its_prompt_not_its_worst_case(upstream: FakeUpstream) -> None:
    """Held in the model's and the paying key's hard budgets while it runs; cancelled
    (its client hung up), it owes both its prompt, as `charge_abandoned` counts it."""
    tag = uuid.uuid4().hex[:8]
    text = _registry(upstream.url, _pricey(tag, 1.0, faults="delay=4"), f"pricey-{tag}")
    registry = parse_registry(text).registry
    who = Payer(f"key-{tag}", f"apikey:key-{tag}", Budget(usd=5.0, hard=True))

    async def go() -> list[float]:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        assert dispatcher.limits is not None
        spend = Spend()

        async def key_spent() -> float:
            assert dispatcher.limits is not None
            return round(await dispatcher.limits.spent(who.account, "day"), 9)

        async def request() -> None:
            with tracked(spend):
                await dispatcher.complete(plan_for(f"pricey-{tag}", "cheap"), _BODY)

        try:
            with paid_by(who):  # as the gateway's middleware makes each request
                call = asyncio.ensure_future(request())
                await asyncio.sleep(0.3)
                held = [await _spent(dispatcher, tag), await key_spent()]
                call.cancel()  # what the gateway does when the client hangs up
                with pytest.raises(asyncio.CancelledError):
                    await call
                usage = await dispatcher.charge_abandoned(spend)
            assert usage is not None
            return [*held, usage.cost_usd, await _spent(dispatcher, tag), await key_spent()]
        finally:
            await dispatcher.aclose()

    held, key_held, owed, spent, key_spent = asyncio.run(go())
    assert held == key_held == pytest.approx(_worst(text, tag))
    assert 0 < owed < held and spent == key_spent == pytest.approx(owed)


def test_dispatchers_sharing_redis_share_the_holds(
    upstream: FakeUpstream, redis_namespace: str
) -> None:
    """Two gateways (two dispatchers on their own Redis clients), three calls each at
    once: two worst cases fit in all."""
    tag = uuid.uuid4().hex[:8]
    limits = f"  limits: {{url: '{REDIS_URL}', namespace: {redis_namespace}, timeout_s: 2}}"
    text = _registry(upstream.url, _pricey(tag, 0.25), f"pricey-{tag}", "").replace(
        "  retries: {attempts: 0}\n", f"  retries: {{attempts: 0}}\n{limits}\n"
    )
    registry = parse_registry(text).registry
    assert registry.dispatch.limits.url == REDIS_URL

    async def go() -> tuple[list[str], float]:
        one = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        two = Dispatcher(registry, build_providers(registry), rng=random.Random(2))
        plan = plan_for(f"pricey-{tag}", "cheap")
        try:
            calls = [d.complete(plan, _BODY) for d in (one, two) for _ in range(3)]
            served = await asyncio.gather(*calls)
            return sorted(s.model for s in served), await _spent(two, tag)
        finally:
            await one.aclose()
            await two.aclose()

    served, spent = asyncio.run(go())
    assert served == ["cheap"] * 4 + [f"pricey-{tag}"] * 2
    assert spent == pytest.approx(2 * _ANSWER_USD)


def test_the_gateway_says_what_a_call_may_cost_when_it_does_not_fit(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A model alone in its chain: a request that may cost more than the budget's room
    gets 503 saying so (and nothing is sent); one asking for a shorter answer is
    served."""
    tag = uuid.uuid4().hex[:8]
    models = f"""
  solo:
    provider: up
    model: solo-{tag}
    price: {{input: 1000, output: 1000}}
    max_output_tokens: 4096
    budget: {{usd: 0.05, period: hour, hard: true}}
"""
    registry = tmp_path / "registry.yaml"
    registry.write_text(_registry(upstream.url, models, "solo"))
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    with serve(registry, tmp_path / "serve.log") as served:
        url = f"{served.url}/v1/chat/completions"
        refused = httpx.post(url, json={**body, "max_tokens": 1000}, timeout=10)
        answered = httpx.post(url, json={**body, "max_tokens": 20}, timeout=10)
        metrics = httpx.get(f"{served.url}/metrics", timeout=10).text
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "upstream_error"
    assert "hard budget has $0.05 of $0.05 left" in error["message"]
    assert "up to 1,000 answer tokens" in error["message"]
    assert answered.status_code == 200, answered.text
    assert 'llmroute_limited_total{limit="budget",model="solo"} 1.0' in metrics
    assert len(upstream.calls_to(f"solo-{tag}")) == 1
    gauges = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name.startswith("llmroute_budget")
    }
    labels = {"kind": "model", "name": "solo", "period": "hour"}
    cap = ("llmroute_budget_usd", tuple(sorted({**labels, "hard": "true"}.items())))
    assert gauges[cap] == 0.05
    spent = ("llmroute_budget_spent_usd", tuple(sorted(labels.items())))
    assert gauges[spent] == pytest.approx(_ANSWER_USD)


# -- cancellation, Redis and deployments (found on review) ----------------------------


def test_a_budget_of_a_fraction_of_a_cent_is_said_in_readable_dollars(
    upstream: FakeUpstream,
) -> None:
    """Budgets and costs below a cent keep their digits in the refusals: a hard budget of
    a millionth of a dollar is $0.000001 (not $1e-06) and the call's worst case is not
    $0.0000; a soft one passed by a first answer says what it spent."""
    tag = uuid.uuid4().hex[:8]
    models = f"""
  tiny-{tag}:
    provider: up
    model: tiny-{tag}
    price: {{input: 0.10, output: 0.10}}
    max_output_tokens: 4096
    budget: {{usd: 0.000001, period: day, hard: true}}
  soft-{tag}:
    provider: up
    model: soft-{tag}
    price: {{input: 0.10, output: 0.10}}
    budget: {{usd: 0.0000005, period: day}}
"""
    registry = parse_registry(_registry(upstream.url, models, f"tiny-{tag}")).registry

    async def go() -> tuple[str, str]:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            with pytest.raises(ProviderError) as hard:
                await dispatcher.complete(plan_for(f"tiny-{tag}"), _BODY)
            await dispatcher.complete(plan_for(f"soft-{tag}"), _BODY)  # 6 tokens: $6e-7
            with pytest.raises(ProviderError) as soft:
                await dispatcher.complete(plan_for(f"soft-{tag}"), _BODY)
            return hard.value.message, soft.value.message
        finally:
            await dispatcher.aclose()

    hard, soft = asyncio.run(go())
    worst = worst_case(_BODY, registry.models[f"tiny-{tag}"], registry.providers["up"])
    assert (worst.prompt_tokens, worst.answer_tokens) == (7, 100)  # $0.0000107
    assert "daily hard budget has $0.000001 of $0.000001 left (spent or held)" in hard
    assert "this call may cost $0.000011 at worst: about 7 prompt" in hard
    assert "over its daily budget ($0.0000006 of $0.0000005); not called" in soft


def test_a_model_the_gateway_passed_over_is_named_without_a_provider(
    upstream: FakeUpstream,
) -> None:
    """A budget's verdict is the gateway's, not a provider's: the attempts name the model
    alone ("m (over its daily budget ...)"), not "m via llmroute (...)", in a served
    request's attempts and in the error of one no model served."""
    tag = uuid.uuid4().hex[:8]
    models = f"""
  spent-{tag}:
    provider: up
    model: spent-{tag}
    price: {{input: 1000, output: 1000}}
    budget: {{usd: 0.001, period: day}}
  hard-{tag}:
    provider: up
    model: hard-{tag}
    price: {{input: 1000, output: 1000}}
    max_output_tokens: 4096
    budget: {{usd: 0.001, period: day, hard: true}}
  cheap-{tag}: {{provider: up, model: cheap-{tag}}}
"""
    registry = parse_registry(_registry(upstream.url, models, f"spent-{tag}")).registry

    async def go() -> tuple[tuple[str, ...], str]:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            await dispatcher.complete(plan_for(f"spent-{tag}"), _BODY)  # $0.006: spent
            served = await dispatcher.complete(plan_for(f"spent-{tag}", f"cheap-{tag}"), _BODY)
            assert served.model == f"cheap-{tag}"
            with pytest.raises(ProviderError) as refused:
                await dispatcher.complete(plan_for(f"hard-{tag}"), _BODY)
            return served.attempts, refused.value.message
        finally:
            await dispatcher.aclose()

    attempts, refused = asyncio.run(go())
    assert attempts == (f"spent-{tag} (over its daily budget ($0.006 of $0.001); not called)",)
    assert refused.startswith(f"every model failed: hard-{tag} (its daily hard budget has")
    assert "via llmroute" not in refused


def _on_redis(text: str, namespace: str) -> Any:
    limits = f"  limits: {{url: '{REDIS_URL}', namespace: {namespace}, timeout_s: 2}}"
    return parse_registry(text.replace("dispatch:\n", f"dispatch:\n{limits}\n")).registry


async def _sums(dispatcher: Dispatcher, tag: str, who: Payer) -> tuple[float, float]:
    assert dispatcher.limits is not None
    key = await dispatcher.limits.spent(who.account, "day")
    return await _spent(dispatcher, tag), round(key, 9)


def test_a_stream_cut_by_a_cancel_scope_settles_every_hold(
    upstream: FakeUpstream, redis_namespace: str
) -> None:
    """Starlette streams inside an anyio task group: a client that hangs up has every
    await of the stream's clean-up cancelled, again and again. Both holds (the model's
    and the key's) are still replaced by what the stream cost."""
    tag = uuid.uuid4().hex[:8]
    text = _registry(upstream.url, _pricey(tag, 10.0, faults="gap=0.3"), f"pricey-{tag}")
    registry = _on_redis(text, redis_namespace)
    who = Payer(f"k-{tag}", f"apikey:k-{tag}", Budget(usd=10.0, hard=True))

    async def go() -> tuple[tuple[float, float], tuple[float, float], float]:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        try:
            with paid_by(who):
                body = {**_BODY, "stream": True}
                opened = await dispatcher.open_stream(plan_for(f"pricey-{tag}"), body)
                held = await _sums(dispatcher, tag, who)
                with anyio.move_on_after(0.5):
                    async for _event in opened.events:
                        pass
            await asyncio.sleep(0.3)
            assert opened.usage is not None
            return held, await _sums(dispatcher, tag, who), opened.usage.cost_usd
        finally:
            await dispatcher.aclose()

    held, after, cost = asyncio.run(go())
    assert held == (pytest.approx(_worst(text, tag)), pytest.approx(_worst(text, tag)))
    assert after == (pytest.approx(cost), pytest.approx(cost)) and 0 < cost < held[0]


def test_a_caller_cancelled_while_its_holds_are_made_leaves_none(
    upstream: FakeUpstream, redis_namespace: str
) -> None:
    """Cancelled while the key's hold is on its way (the model's made already), and
    while a hold's reply is on its way back: nothing was sent, and once the holds are
    made they are given back."""
    tag = uuid.uuid4().hex[:8]
    text = _registry(upstream.url, _pricey(tag, 10.0), f"pricey-{tag}")
    registry = _on_redis(text, redis_namespace)
    who = Payer(f"k-{tag}", f"apikey:k-{tag}", Budget(usd=10.0, hard=True))

    async def go(slow_key: bool) -> tuple[float, float]:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        limits = dispatcher.limits
        assert limits is not None
        original = limits.hold_usd

        async def slow(key: str, *args: Any) -> Any:
            if slow_key and key.startswith("apikey:"):
                await asyncio.sleep(0.3)  # a Redis round trip under load
            out = await original(key, *args)
            if not slow_key:
                await asyncio.sleep(0.3)  # the reply's way back
            return out

        limits.hold_usd = slow  # type: ignore[method-assign]
        try:
            with paid_by(who):
                call = asyncio.ensure_future(dispatcher.complete(plan_for(f"pricey-{tag}"), _BODY))
                await asyncio.sleep(0.1)
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
            # given back once made (0.3 s; later on a loaded machine): waited for, bounded
            await asyncio.sleep(0.8)
            sums = await _sums(dispatcher, tag, who)
            for _ in range(50):
                if sums == (0.0, 0.0):
                    break
                await asyncio.sleep(0.1)
                sums = await _sums(dispatcher, tag, who)
            return sums
        finally:
            await dispatcher.aclose()

    calls = len(upstream.calls_to(f"pricey-{tag}?delay=0.5"))
    assert asyncio.run(go(slow_key=True)) == (0.0, 0.0)
    assert asyncio.run(go(slow_key=False)) == (0.0, 0.0)
    assert len(upstream.calls_to(f"pricey-{tag}?delay=0.5")) == calls  # nothing sent


def test_the_worst_case_is_the_costliest_deployments(upstream: FakeUpstream) -> None:
    """An Anthropic deployment bounds an answer at llmroute's default (4,096 tokens),
    an OpenAI one only by the context window: the hold is the larger, so a cap that
    fits the first alone refuses the call instead of being passed."""
    tag = uuid.uuid4().hex[:8]
    models = f"""
  mixed-{tag}:
    model: m-{tag}
    deployments: [{{provider: claude}}, {{provider: up}}]
    price: {{input: 1, output: 10}}
    context_window: 128000
    budget: {{usd: 0.05, period: day, hard: true}}
"""
    registry = parse_registry(_registry(upstream.url, models, f"mixed-{tag}")).registry
    body = {"messages": [{"role": "user", "content": "hello"}]}
    model = registry.models[f"mixed-{tag}"]
    assert worst_case(body, model, registry.providers["claude"]).usd < 0.05
    assert worst_case(body, model, registry.providers["up"]).usd > 1.0

    async def go() -> str:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        try:
            with pytest.raises(ProviderError) as refused:
                await dispatcher.complete(plan_for(f"mixed-{tag}"), body)
            return str(refused.value)
        finally:
            await dispatcher.aclose()

    assert "up to 127,99" in asyncio.run(go())  # the OpenAI deployment's bound


def test_a_long_stream_renews_its_holds(
    upstream: FakeUpstream, redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream still answering renews its holds' leases (here at every event instead
    of every few minutes), so a long stream's worst case is not taken out of the sum as
    if its process had died; at its end the holds are gone, their leases left as short
    tombstones (a settle made again changes nothing)."""
    from llmroute.dispatch import dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "SLOT_RENEW_S", 0.0)
    tag = uuid.uuid4().hex[:8]
    text = _registry(upstream.url, _pricey(tag, 10.0, faults="gap=0.05"), f"pricey-{tag}")
    registry = _on_redis(text, redis_namespace)
    raw = redis.Redis.from_url(REDIS_URL)

    def lapses() -> list[float]:
        keys = list(raw.scan_iter(f"{redis_namespace}:usd:budget:pricey-{tag}:*:lapses"))
        return [score for key in keys for _, score in raw.zrange(key, 0, -1, withscores=True)]

    async def go() -> tuple[list[float], list[float], list[float]]:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        words = [{"role": "user", "content": "one two three four five"}]
        body = {**_BODY, "messages": words, "stream": True}
        try:
            opened = await dispatcher.open_stream(plan_for(f"pricey-{tag}"), body)
            events = aiter(opened.events)
            await anext(events)
            first = lapses()
            await asyncio.sleep(0.05)
            for _ in range(3):
                await anext(events)
            later = lapses()
            async for _event in events:
                pass
            return first, later, lapses()
        finally:
            await dispatcher.aclose()

    try:
        first, later, left = asyncio.run(go())
        holds = list(raw.scan_iter(f"{redis_namespace}:usd:budget:pricey-{tag}:*:holds"))
    finally:
        raw.close()
    assert len(first) == len(later) == 1 and later[0] > first[0]  # renewed as events came
    assert holds == [] and len(left) == 1  # settled: the hold gone, its id a tombstone
    assert left[0] <= time.time() + SETTLED_KEPT_S < first[0]  # lapsing soon, unlike a lease


def test_a_hold_is_leased_past_every_try_of_a_slow_model(
    upstream: FakeUpstream, redis_namespace: str
) -> None:
    """A provider that may take 20 minutes an answer, tried three times: its holds are
    leased for longer than the hour that may take, not the half-hour floor."""
    tag = uuid.uuid4().hex[:8]
    text = _registry(upstream.url, _pricey(tag, 10.0), f"pricey-{tag}")
    text = text.replace("timeout_s: 5}", "timeout_s: 1200}").replace(
        "retries: {attempts: 0}", "retries: {attempts: 2, backoff_s: 0.01}"
    )
    registry = _on_redis(text, redis_namespace)
    raw = redis.Redis.from_url(REDIS_URL)

    async def go() -> float:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        try:
            call = asyncio.ensure_future(dispatcher.complete(plan_for(f"pricey-{tag}"), _BODY))
            await asyncio.sleep(0.25)  # in flight (the upstream answers after 0.5 s)
            pattern = f"{redis_namespace}:usd:budget:pricey-{tag}:*:lapses"
            (key,) = list(raw.scan_iter(pattern))
            ((_, lapses),) = raw.zrange(key, 0, -1, withscores=True)
            await call
            return float(lapses) - time.time()
        finally:
            await dispatcher.aclose()

    try:
        assert 3 * 1200 < asyncio.run(go()) < 3 * 1300
    finally:
        raw.close()


def test_a_raw_completions_hold_counts_its_suffix(upstream: FakeUpstream) -> None:
    """A model continuing raw text gets a completions body (`text_body`): its worst case
    counts the ``suffix`` a chat body does not carry, so a fill-in-the-middle request
    with a long suffix does not fit where the same prompt alone does (and the chat
    fallback cannot take a suffix: a 503 that says what the call might cost); the one
    that fits is sent raw and costs what it answered."""
    tag = uuid.uuid4().hex[:8]
    models = _pricey(tag, 0.2, faults="x=1").replace(
        "max_output_tokens: 4096", "max_output_tokens: 4096\n    text_completions: true"
    )
    registry = parse_registry(_registry(upstream.url, models, f"pricey-{tag}")).registry
    suffix = "    return total\n" * 300  # about 2,400 tokens at the bound: $2.4 at this price
    plain, fim = TextRequest.of({}), TextRequest.of({"suffix": suffix})
    # as the completions front makes it: the suffix the message's second part
    with_suffix = {
        **_BODY,
        "messages": [{"role": "user", "content": chat_content("hello", suffix)}],
    }

    async def go() -> tuple[str, float, ProviderError]:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        plan = plan_for(f"pricey-{tag}", "cheap")
        try:
            alone = await dispatcher.complete(dataclasses.replace(plan, text=plain), _BODY)
            spent = await _spent(dispatcher, tag)
            with pytest.raises(ProviderError) as refused:
                await dispatcher.complete(dataclasses.replace(plan, text=fim), with_suffix)
            return alone.model, spent, refused.value
        finally:
            await dispatcher.aclose()

    alone, spent, refused = asyncio.run(go())
    assert alone == f"pricey-{tag}" and spent == pytest.approx(_ANSWER_USD)
    assert refused.status == 503 and "may cost $2." in refused.message
    assert "2,5" in refused.message  # prompt tokens: the suffix counted
    raw = [r for r in upstream.requests if r.body.get("model") == f"pricey-{tag}?x=1"]
    assert [r.path for r in raw] == ["/v1/completions"]  # the long one was never sent
    assert raw[0].body["prompt"] == "hello" and "messages" not in raw[0].body


def test_a_held_stream_failing_before_a_model_over_the_keys_budget_is_a_502(
    upstream: FakeUpstream,
) -> None:
    """`a`'s stream is handed over and fails before its words (an error event after its
    opening), and `pricey` does not fit the paying key's hard budget: one model failed,
    one was passed over, the 502 a request not streamed gets for the same chain, with
    both named. It was the key's 429 ``insufficient_quota``, the status of the model
    after `a` alone, which tells the client its key is spent though a model was tried
    and failed."""
    tag = uuid.uuid4().hex[:8]
    models = _pricey(tag, 10.0, faults="x=1")
    models += f"  a-{tag}: {{provider: up, model: 'a-{tag}?early=1&pause=0.3'}}\n"
    models += f"  broken-{tag}: {{provider: up, model: 'broken-{tag}?status=500'}}\n"
    text = _registry(upstream.url, models, f"a-{tag}")
    registry = parse_registry(text).registry
    held = registry.dispatch.model_copy(update={"stream_hold_s": 0.05})
    registry = registry.model_copy(update={"dispatch": held})
    who = Payer(f"k-{tag}", f"apikey:k-{tag}", Budget(usd=0.05, hard=True))

    async def go() -> tuple[ProviderError, ProviderError]:
        dispatcher = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        try:
            with paid_by(who):
                with pytest.raises(ProviderError) as unstreamed:
                    await dispatcher.complete(plan_for(f"broken-{tag}", f"pricey-{tag}"), _BODY)
                body = {**_BODY, "stream": True}
                opened = await dispatcher.open_stream(plan_for(f"a-{tag}", f"pricey-{tag}"), body)
                assert opened.model == f"a-{tag}"  # handed over silent
                with pytest.raises(ProviderError) as streamed:
                    async for _event in opened.events:
                        pass
            return unstreamed.value, streamed.value
        finally:
            await dispatcher.aclose()

    unstreamed, streamed = asyncio.run(go())
    assert isinstance(unstreamed, AllFallbacksFailed) and unstreamed.status == 502
    assert isinstance(streamed, AllFallbacksFailed) and streamed.status == 502
    assert [attempt.split()[0] for attempt in streamed.attempts] == [f"a-{tag}", f"pricey-{tag}"]
    assert "hard budget" in streamed.attempts[1]
