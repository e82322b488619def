"""Circuit-breaker openings shared through the real Redis on 127.0.0.1: the breaker's
side (who opened it, staying open for another process), the Redis store, and two
dispatchers standing for two replicas in front of a real HTTP upstream that fails."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import serve, serve_refused, wait_for
from plans import plan_for
from redis_service import REDIS_URL

from llmroute.dispatch import Dispatcher
from llmroute.dispatch.breaker import BreakerState, CircuitBreaker
from llmroute.errors import ConfigError
from llmroute.providers import build_providers
from llmroute.registry import ConfigErrors, parse_registry
from llmroute.registry.schema import BreakerSettings
from llmroute.state.breakers import RedisBreakers, open_breakers
from llmroute.state.stores import check_registry_urls


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_breaker_says_which_failure_opened_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerSettings(failures=2, cooldown_s=10), clock=clock)
    assert breaker.allow() and breaker.record_failure() is False
    assert breaker.allow() and breaker.record_failure() is True
    assert breaker.record_failure() is False  # already open: ignored
    clock.now += 10
    assert breaker.allow()  # the half-open probe
    assert breaker.record_failure() is True  # reopened


def test_a_breaker_stays_open_as_long_as_another_process_says() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerSettings(failures=2, cooldown_s=10), clock=clock)
    breaker.open_elsewhere(4.0)
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 3.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.2
    assert breaker.state is BreakerState.HALF_OPEN  # probes, like everyone else, at expiry
    assert breaker.allow() and breaker.record_success() is None
    assert breaker.state is BreakerState.CLOSED
    own = CircuitBreaker(BreakerSettings(failures=1, cooldown_s=10), clock=clock)
    own.record_failure()
    own.open_elsewhere(2.0)  # shorter than its own cooldown: its own stands
    clock.now += 5
    assert own.state is BreakerState.OPEN
    off = CircuitBreaker(BreakerSettings(enabled=False), clock=clock)
    off.open_elsewhere(5.0)
    assert off.allow()


def test_redis_keeps_an_opening_for_the_cooldown(redis_namespace: str) -> None:
    async def go() -> tuple[float | None, float | None]:
        shared = RedisBreakers(REDIS_URL, 2.0, redis_namespace)
        try:
            await shared.opened("up:big", 30.0)
            return await shared.open_for("up:big"), await shared.open_for("up:small")
        finally:
            await shared.aclose()

    remaining, other = asyncio.run(go())
    assert remaining is not None and 29.0 < remaining <= 30.0
    assert other is None


def test_a_redis_that_is_not_there_changes_nothing(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> list[float | None]:
        shared = RedisBreakers(f"redis://:pw@127.0.0.1:{closed_port}/0", 0.2, "x")
        try:
            await shared.opened("up:big", 30.0)
            return [await shared.open_for("up:big") for _ in range(3)]
        finally:
            await shared.aclose()

    with caplog.at_level(logging.WARNING, logger="llmroute.breakers"):
        assert asyncio.run(go()) == [None, None, None]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "each process keeps its own" in warnings[0]
    assert "pw" not in warnings[0]


def test_memory_needs_no_redis_and_a_bad_url_is_refused() -> None:
    assert open_breakers(BreakerSettings()) is None
    assert open_breakers(BreakerSettings(enabled=False, url=REDIS_URL)) is None
    text = REGISTRY % {"url": "http://127.0.0.1:1/v1", "breaker": ""}
    registry = parse_registry(text).registry
    check_registry_urls(registry)
    with pytest.raises(ConfigErrors, match=r"17: dispatch\.breaker\.url: must be 'memory'"):
        parse_registry(text + "    url: 'http://redis:6379'\n")
    bad = registry.model_copy(
        update={
            "dispatch": registry.dispatch.model_copy(
                update={"breaker": BreakerSettings.model_construct(url="mysql://x")}
            )
        }
    )
    with pytest.raises(ConfigError, match=r"dispatch\.breaker\.url=mysql://x"):
        check_registry_urls(bad)


def test_a_redis_url_its_client_would_refuse_stops_serve_with_one_line(tmp_path: Path) -> None:
    """A value redis-py refuses when it opens the pool (``?max_connections=`` mistyped, a
    port that is no number) is said at start, password masked, as a scheme it does not
    know is: not a lifespan traceback."""
    url = "redis://:hunter2@127.0.0.1:1/0?max_connections=lots"
    text = REGISTRY % {"url": "http://127.0.0.1:1/v1", "breaker": ""}
    with pytest.raises(ConfigError, match=r"dispatch\.breaker\.url=redis://:\*\*\*@"):
        check_registry_urls(parse_registry(text + f"    url: '{url}'\n").registry)
    done = serve_refused(text + f"    url: '{url}'\n", tmp_path, ["--port", "0"])
    said = done.stderr.strip()
    assert done.returncode == 2 and len(said.splitlines()) == 1, said
    assert "Invalid value for 'max_connections'" in said and "hunter2" not in said


# -- two replicas ------------------------------------------------------------------------

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  broken: {provider: up, model: 'broken?status=503'}
  small: {provider: up, model: small}
routes:
  - {name: r, examples: [hello], target: broken, policy: {fallback: [small]}}
default: {target: small}
dispatch:
  retries: {attempts: 0}
  breaker:
    failures: 2
    cooldown_s: 30
%(breaker)s
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def _replicas(upstream: FakeUpstream, breaker: str) -> tuple[list[str], list[str], int]:
    """Replica one serves three requests (the broken model fails twice, which opens its
    breaker, then is skipped), replica two three more. Returns who served each and how
    often the broken model was called."""
    registry = parse_registry(REGISTRY % {"url": upstream.url, "breaker": breaker}).registry
    before = len(upstream.calls_to("broken?status=503"))

    async def serve(dispatcher: Dispatcher) -> list[str]:
        body = {"messages": [{"role": "user", "content": "hello"}]}
        out = []
        for _ in range(3):
            served = await dispatcher.complete(plan_for("broken", "small"), body)
            out.append(served.model)
        return out

    async def go() -> tuple[list[str], list[str]]:
        one = Dispatcher(registry, build_providers(registry), rng=random.Random(1))
        two = Dispatcher(registry, build_providers(registry), rng=random.Random(2))
        try:
            first = await serve(one)
            await one.aclose()  # lets the announcement of the opening finish
            return first, await serve(two)
        finally:
            await two.aclose()

    first, second = asyncio.run(go())
    return first, second, len(upstream.calls_to("broken?status=503")) - before


def test_an_opening_in_one_replica_keeps_the_others_off(
    upstream: FakeUpstream, redis_namespace: str
) -> None:
    shared = f"    url: '{REDIS_URL}'\n    namespace: {redis_namespace}\n    timeout_s: 2"
    first, second, broken_calls = _replicas(upstream, shared)
    assert first == ["small", "small", "small"] and second == ["small", "small", "small"]
    assert broken_calls == 2  # replica two never called it


def test_without_sharing_each_replica_pays_its_own_failures(upstream: FakeUpstream) -> None:
    first, second, broken_calls = _replicas(upstream, "")
    assert first == second == ["small", "small", "small"]
    assert broken_calls == 4


def test_two_gateways_share_an_opening(
    upstream: FakeUpstream, redis_namespace: str, tmp_path: Path
) -> None:
    """`llmroute serve` twice with one Redis: the second gateway never calls the model
    whose breaker the first one opened, and its dashboard shows the breaker open. Redis
    calls may take 2 s here, not 0.05: on a loaded test machine the announcement (a new
    connection, then SET) ran past the default and was skipped as an outage."""
    shared = f"    url: '{REDIS_URL}'\n    namespace: {redis_namespace}\n    timeout_s: 2"
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY % {"url": upstream.url, "breaker": shared})
    env = {"LLMROUTE_TELEMETRY_URL": "off"}
    ask = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    before = len(upstream.calls_to("broken?status=503"))
    with (
        serve(registry, tmp_path / "a.log", env=env) as a,
        serve(registry, tmp_path / "b.log", env=env) as b,
    ):
        for _ in range(2):  # answered by the fallback, each after a 503 from broken
            response = httpx.post(f"{a.url}/v1/chat/completions", json=ask, timeout=10)
            assert response.headers["x-llmroute-model"] == "small"
        assert len(upstream.calls_to("broken?status=503")) - before == 2

        def opened_in_redis() -> bool:
            with redis.Redis.from_url(REDIS_URL) as raw:
                return bool(raw.keys(f"{redis_namespace}:breaker:*"))

        wait_for("the opening in Redis", opened_in_redis, 5)
        response = httpx.post(f"{b.url}/v1/chat/completions", json=ask, timeout=10)
        assert response.status_code == 200 and response.headers["x-llmroute-model"] == "small"
        assert len(upstream.calls_to("broken?status=503")) - before == 2  # b never tried it
        live = httpx.get(f"{b.url}/dashboard/data", timeout=10).json()["live"]
        states = {row["model"]: row["state"] for row in live["breakers"]}
        assert states == {"broken": "open", "small": "closed"}
        assert live["breakers_shared"] == REDIS_URL
