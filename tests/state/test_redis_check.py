"""The check of a registry's Redis URLs made where a registry is loaded
(`llmroute.state.redis_check`): which URLs its features open, each once with the
settings that name it, and what is wrong with one, in a few words: against the tests'
Redis, a db it lacks, a refused port, a password it refuses, and a server that accepts
and never answers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from redis_service import REDIS_URL, past_databases

from llmroute.registry import parse_registry
from llmroute.state.redis_check import RedisUse, check_redis, redis_uses

REGISTRY = """
encoder: builtin:static
providers: {p: {kind: echo}}
models:
  small: {provider: p, model: echo-small, rpm: 100}
routes:
  - {name: chitchat, examples: [hello there], target: small}
default: {target: small}
cache: {url: "redis://:pw@127.0.0.1:1/0"}
affinity: {url: "redis://127.0.0.1:6379/2"}
stored_responses: {url: "redis://:pw@127.0.0.1:1/0"}
batches: {url: memory}
dispatch:
  limits: {url: "redis://127.0.0.1:6379/2"}
"""


def test_each_redis_url_is_checked_once_with_the_settings_that_name_it() -> None:
    registry = parse_registry(REGISTRY).registry
    assert redis_uses(registry, {}) == [  # with each feature's timeout_s
        RedisUse("redis://:pw@127.0.0.1:1/0", ("cache.url", "stored_responses.url"), (0.05, 1.0)),
        RedisUse("redis://127.0.0.1:6379/2", ("dispatch.limits.url", "affinity.url"), (0.05, 0.05)),
    ]
    assert redis_uses(registry, {})[0].masked == "redis://:***@127.0.0.1:1/0"
    # the cache's URL as the environment overrides it; breakers on (memory: none)
    env = {"LLMROUTE_CACHE_URL": "redis://127.0.0.1:6379/2"}
    assert redis_uses(registry, env) == [
        RedisUse(
            "redis://127.0.0.1:6379/2",
            ("LLMROUTE_CACHE_URL", "dispatch.limits.url", "affinity.url"),
            (0.05, 0.05, 0.05),
        ),
        RedisUse("redis://:pw@127.0.0.1:1/0", ("stored_responses.url",), (1.0,)),
    ]
    assert redis_uses(registry, {"LLMROUTE_CACHE_URL": "off"})[0].settings == (
        "dispatch.limits.url",
        "affinity.url",
    )
    limits_only = REGISTRY.replace("rpm: 100", "rpm: null")
    assert [u.settings for u in redis_uses(parse_registry(limits_only).registry, {})] == [
        ("cache.url", "stored_responses.url"),
        ("affinity.url",),  # nothing to count: no limits opened
    ]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A 127.0.0.1 port that accepts connections and never answers (a Redis stuck, or
    behind a proxy that lost it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_what_is_wrong_is_said_in_a_few_words(
    redis_namespace: str, closed_port: int, silent_port: int
) -> None:
    """Answered, a db the server lacks, a port refused, a password refused, no answer:
    each said first, the password never."""
    past, db, count = past_databases()
    urls = [
        REDIS_URL,
        past,
        f"redis://:s3cret@127.0.0.1:{closed_port}/0",
        REDIS_URL.replace("redis://", "redis://nobody:s3cret@", 1),
        f"redis://:s3cret@127.0.0.1:{silent_port}/0",
    ]

    async def go() -> list[tuple[str | None, float]]:
        checks = [check_redis(RedisUse(url, ("cache.url",)), 0.5) for url in urls]
        return [(c.problem, c.latency_ms) for c in await asyncio.gather(*checks)]

    (ok, ms), *failed = asyncio.run(go())
    assert ok is None and ms > 0
    problems = [problem or "" for problem, _ in failed]
    assert problems[0].startswith(
        f"db {db} is out of range: this Redis has {count} databases (0 to {count - 1})"
    )
    assert problems[1].startswith("connection refused: "), problems[1]
    assert problems[2].startswith("authentication refused: ")
    assert problems[3] == "timed out: no answer within 0.5 s", problems[3]
    assert not any("s3cret" in p for p in problems)


def test_a_handshake_redis_refuses_is_said_so() -> None:
    """An ACL user who may not ``SELECT`` the URL's db: every connection is refused at
    its handshake, said as such (it read "answered with an error", as if Redis served)."""
    from private_redis import private_redis, without_select

    with private_redis() as url:
        limited = without_select(url, "s3cret")
        check = asyncio.run(check_redis(RedisUse(limited, ("cache.url",)), 1.0))
    assert check.problem == (
        "refused at connect: this user has no permissions to run the 'select' command"
    ), check.problem


def test_the_time_said_is_redis_s_not_the_client_s_making(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`latency_ms` times the connection, handshake and PING, not the making of the
    client before them: its first making imports redis-py, 0.2 to 0.5 s on a loaded
    machine, which `registry probe` said as "answered in 302 ms" for a Redis that
    answered in a millisecond. The clock here moves only while the client is made."""
    import types

    from llmroute.state import redis_check

    clock = [1000.0]
    made = redis_check.connect

    def slow_to_make(url: str, timeout_s: float, setting: str) -> object:
        clock[0] += 10.0  # the import and the pool, on this clock
        return made(url, timeout_s, setting)

    monkeypatch.setattr(redis_check, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(redis_check, "connect", slow_to_make)
    check = asyncio.run(check_redis(RedisUse(REDIS_URL, ("cache.url",)), 1.0))
    assert check.problem is None
    assert check.latency_ms == 0.0, check.latency_ms


def test_a_redis_slower_than_a_features_timeout_is_said_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The check waits `CHECK_S` (2 s), a feature 50 ms by default: a Redis whose every
    round trip takes 70 ms was said to answer, though each of affinity's calls times out.
    The line names the features whose `timeout_s` a round trip outlasts, tightest
    first, and both times; one whose bound it fits (stored_responses, 1 s) is not named."""
    from stall_proxy import stall_proxy

    from llmroute.server.reload import say_redis

    text = (
        REGISTRY.replace("rpm: 100", "rpm: null")
        .replace('cache: {url: "redis://:pw@127.0.0.1:1/0"}\n', "")
        .replace("batches: {url: memory}\n", "")
    )
    with stall_proxy(REDIS_URL) as (proxy, url):
        text = text.replace("redis://:pw@127.0.0.1:1/0", url)
        text = text.replace("redis://127.0.0.1:6379/2", url)
        registry = parse_registry(text).registry
        (use,) = redis_uses(registry, {})
        assert use.settings == ("affinity.url", "stored_responses.url")
        assert use.timeouts == (0.05, 1.0)
        proxy.slow(0.07)
        check = asyncio.run(check_redis(use))
        assert check.problem is None
        assert check.round_trip_ms is not None and check.round_trip_ms >= 70
        assert check.outlasted == (("affinity.timeout_s", 0.05),)
        with caplog.at_level("INFO", logger="llmroute.server"):
            asyncio.run(say_redis(registry))
        (said,) = [r for r in caplog.records if url in r.getMessage()]
        assert said.levelname == "WARNING"
        message = said.getMessage()
        assert f"redis {url} (affinity.url, stored_responses.url): answered, " in message
        assert "more than affinity.timeout_s (50 ms)" in message, message
        assert "stored_responses.timeout_s" not in message
        proxy.resume()
        check = asyncio.run(check_redis(use))
        assert check.problem is None and check.outlasted == ()
