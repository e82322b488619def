"""Redis connections of a gateway with every Redis-backed feature on, seen from Redis
(``CLIENT LIST``): one pool per process for one URL and timeout, named after the
process, which a registry reload keeps open for the new registry's stores and the
shutdown closes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
from gateway_proc import serve_text, stop, wait_for
from redis_service import REDIS_URL

from llmroute.state.redis_conn import MAX_CONNECTIONS

REGISTRY = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small:
    provider: echo
    model: echo-small
    rpm: 1000000
    price: {input: 1, output: 1}
    budget: {usd: 1000000, period: day}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
telemetry: {enabled: false}
cache: {url: "%(redis)s", namespace: "%(ns)s", timeout_s: 1, semantic: {}}
affinity: {url: "%(redis)s", namespace: "%(ns)s", timeout_s: 1}
stored_responses: {url: "%(redis)s", namespace: "%(ns)s", timeout_s: 1}
batches: {url: "%(redis)s", namespace: "%(ns)s", timeout_s: 1}
dispatch:
  limits: {url: "%(redis)s", namespace: "%(ns)s", timeout_s: 1}
  breaker: {url: "%(redis)s", namespace: "%(ns)s", timeout_s: 1}
"""
BURST = 160  # concurrent requests, each a few Redis calls (limits, cache, affinity, ...)


def _ours(pid: int) -> set[int]:
    """The ids of the connections process `pid` holds."""
    import redis

    admin = redis.Redis.from_url(REDIS_URL)
    try:
        return {int(c["id"]) for c in admin.client_list() if c["name"] == f"llmroute:{pid}"}
    finally:
        admin.close()


def _burst(url: str, tag: str) -> list[int]:
    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=BURST)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

            async def one(i: int) -> int:
                if i % 4 == 0:  # a stored response
                    body = {"model": "auto", "input": f"{tag} {i}"}
                    return (await client.post("/v1/responses", json=body)).status_code
                messages = [{"role": "user", "content": f"{tag} number {i}"}]
                body = {"model": "auto", "messages": messages}
                return (await client.post("/v1/chat/completions", json=body)).status_code

            return await asyncio.gather(*(one(i) for i in range(BURST)))

    return asyncio.run(run())


def test_a_burst_holds_one_pool_across_a_reload_and_the_shutdown_closes_it(
    tmp_path: Path, redis_namespace: str
) -> None:
    """Each feature had a pool of its own: a burst left up to six times
    `MAX_CONNECTIONS` idle connections per process, unnamed."""
    text = REGISTRY % {"redis": REDIS_URL, "ns": redis_namespace}
    with serve_text(text, tmp_path) as served:
        pid = served.proc.pid
        assert set(_burst(served.url, "first")) == {200}
        before = _ours(pid)
        assert 0 < len(before) <= MAX_CONNECTIONS

        old = served.version()
        (tmp_path / "registry.yaml").write_text(text.replace("1000000", "2000000"))
        served.proc.send_signal(signal.SIGHUP)
        retired = f"registry version {old} retired"
        wait_for("the old registry retired", lambda: retired in served.log_text(), 30)
        assert before <= _ours(pid)  # closing the old stores kept the pool the new ones use

        assert set(_burst(served.url, "second")) == {200}
        assert 0 < len(_ours(pid)) <= MAX_CONNECTIONS
        stop(served.proc)
        assert _ours(pid) == set()
