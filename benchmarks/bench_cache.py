"""What the response cache costs and saves (and what a deployment's rpm limit and a
shared breaker cost).

    .venv/bin/python benchmarks/bench_cache.py [--duration 3] [--rounds 5] [--encoder static]
        [--redis redis://127.0.0.1:6379/15] [--in-process-only] [--json]

Prints a "## Response cache" section for docs/benchmarks.md (--json: the numbers).

Part 1, in-process: the key of one request (the body as sent upstream, canonical JSON,
SHA-256) for a short chat request and a long one (8 kB of messages), and one get and
one set on each store (memory; Redis on 127.0.0.1 when reachable), one rpm-limit
check (llmroute.state.limits) in memory and in Redis, a client key's tpm hold and its
release (one request's two calls), the gateway's client-key check
(``auth:`` with 50 keys), and a deployment's shared-breaker
check before a call (`BreakerLink.sync`) within ``sync_s`` of the last read (no Redis
call) and when due (one Redis read); 2,000 calls each.

Part 2, through `llmroute serve` (processes and load generator of
benchmarks/gateway_overhead.py: an instant fake upstream, one keep-alive connection,
closed loop, the 60 prompts of examples/eval.jsonl in turn): latency p50 and the
gateway's CPU time per request with no cache, with every request a hit, and with every
request a miss that is stored (``Cache-Control: no-cache``: the lookup is skipped, the
write is not), for the memory store and for Redis. All gateways run at once and the
points are measured in turn, --rounds times (--duration seconds each); medians. The
upstream answers at once, so the hit's saving here is the gateway's own work for an
upstream call; a real model's hundreds of milliseconds come on top of that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from _common import ROOT, dump_json, log, machine, percentiles
from gateway_overhead import bench_registry, bodies, gateway, measure, upstream

from llmroute.decide import Router
from llmroute.dispatch import plan_request
from llmroute.dispatch.breaker import CircuitBreaker
from llmroute.dispatch.deployments import BreakerLink
from llmroute.registry import parse_registry
from llmroute.registry.schema import ApiKey, AuthSettings, BreakerSettings
from llmroute.server.auth import KeyTable, presented_key
from llmroute.state import (
    CacheDirectives,
    MemoryLimits,
    MemoryStore,
    RedisBreakers,
    RedisLimits,
    RedisStore,
    ResponseCache,
)

PROMPTS = ROOT / "examples" / "eval.jsonl"
CALLS = 2000


def _router() -> Router:
    text = """
encoder: builtin:static
providers: {up: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models: {small: {provider: up, model: small}}
routes: [{name: chat, examples: ["hello there"], target: small}]
default: {target: small}
cache: {}
"""
    return Router(parse_registry(text))


def _timed(fn: Any, calls: int = CALLS) -> dict[str, float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e3)
    return percentiles(samples)


def _timed_async(make: Any, calls: int = CALLS) -> dict[str, float]:
    async def go() -> list[float]:
        samples = []
        for i in range(calls):
            start = time.perf_counter_ns()
            await make(i)
            samples.append((time.perf_counter_ns() - start) / 1e3)
        return samples

    return percentiles(asyncio.run(go()))


def in_process(redis_url: str | None) -> dict[str, Any]:
    router = _router()
    settings = router.loaded.registry.cache
    assert settings is not None
    cache = ResponseCache(settings, MemoryStore(10_000, 1 << 28), router.version)
    short = {"model": "auto", "messages": [{"role": "user", "content": "hello there, how are you"}]}
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "x " * 200} for i in range(20)
    ]
    long = {"model": "auto", "messages": turns, "temperature": 0}
    out: dict[str, Any] = {}
    for name, body in (("short", short), ("long_8kB", long)):
        plan = plan_request(router, body, {})
        out[f"key_{name}"] = _timed(lambda plan=plan, body=body: cache.key(plan, body, False))
    value = b"x" * 1500  # about one short chat.completion
    memory = MemoryStore(10_000, 1 << 28)
    out["memory_set"] = _timed_async(lambda i: memory.set(f"k{i % 500}", value, 60))
    out["memory_get"] = _timed_async(lambda i: memory.get(f"k{i % 500}"))
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "y " * 600}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 600, "cost_usd": 0.001},
    }
    allow = CacheDirectives()

    async def put(i: int) -> None:  # the request's share: encode, schedule the write
        cache.put_completion(f"p{i % 500}", allow, "small", "up", answer)

    out["put_completion_1.3kB"] = _timed_async(put)
    if redis_url is not None:
        namespace = f"llmroute-bench-{uuid.uuid4().hex[:8]}"

        async def both() -> tuple[list[float], list[float]]:
            store = RedisStore(redis_url, timeout_s=1.0)
            sets, gets = [], []
            try:
                for i in range(CALLS):
                    start = time.perf_counter_ns()
                    await store.set(f"{namespace}:{i % 500}", value, 60)
                    sets.append((time.perf_counter_ns() - start) / 1e3)
                for i in range(CALLS):
                    start = time.perf_counter_ns()
                    await store.get(f"{namespace}:{i % 500}")
                    gets.append((time.perf_counter_ns() - start) / 1e3)
            finally:
                await store.aclose()
            return sets, gets

        sets, gets = asyncio.run(both())
        out["redis_set"], out["redis_get"] = percentiles(sets), percentiles(gets)
    out["auth_key_check"] = _timed(_key_check())
    limits = MemoryLimits()
    out["limit_memory_acquire"] = _timed_async(lambda i: limits.acquire(f"p:m{i % 8}", 10**9))
    out["tpm_memory_hold_release"] = _timed_async(lambda i: _hold_release(limits, i))
    if redis_url is not None:
        out["limit_redis_acquire"] = percentiles(
            asyncio.run(_on_redis_limits(redis_url, lambda r, i: r.acquire(f"p:m{i % 8}", 10**9)))
        )
        out["tpm_redis_hold_release"] = percentiles(
            asyncio.run(_on_redis_limits(redis_url, _hold_release))
        )
        out["breaker_sync_not_due"] = percentiles(asyncio.run(_breaker_sync(redis_url, 3600)))
        out["breaker_sync_due"] = percentiles(asyncio.run(_breaker_sync(redis_url, 1e-9)))
    return out


async def _on_redis_limits(
    redis_url: str, call: Callable[[RedisLimits, int], Awaitable[object]]
) -> list[float]:
    """`call` timed CALLS times on a fresh Redis limits namespace (µs)."""
    shared = RedisLimits(redis_url, 1.0, f"llmroute-bench-{uuid.uuid4().hex[:8]}")
    samples = []
    try:
        for i in range(CALLS):
            start = time.perf_counter_ns()
            await call(shared, i)
            samples.append((time.perf_counter_ns() - start) / 1e3)
    finally:
        await shared.aclose()
    return samples


async def _hold_release(limits: MemoryLimits | RedisLimits, i: int) -> None:
    """A key's tpm hold for one request and its release (two calls on the request path)."""
    key = f"apikey:k{i % 8}"
    minute = await limits.hold_tokens(key, 400, 10**9)
    assert minute is not None
    await limits.release_tokens(key, minute, 400)


def _key_check() -> Any:
    """What the gateway's client-key check does per request (auth: with 50 keys): read
    the ASGI headers (10 here), take the presented key, hash it, look it up."""
    keys = tuple(ApiKey(name=f"k{i}", key_env=f"K{i}") for i in range(50))
    env = {f"K{i}": f"sk-key-{i:04d}-abcdefghijklmnop" for i in range(50)}
    table = KeyTable.build(AuthSettings(keys=keys), env)
    headers = {
        "authorization": "Bearer sk-key-0042-abcdefghijklmnop",
        "content-type": "application/json",
        "host": "127.0.0.1:8000",
        "user-agent": "OpenAI/Python 1.99.0",
        "accept": "application/json",
    }
    raw = [(k.encode(), v.encode()) for k, v in headers.items()] * 2

    def check() -> None:
        found = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        presented = presented_key(found)
        assert presented is not None and table.find(presented) is not None

    return check


async def _breaker_sync(redis_url: str, sync_s: float) -> list[float]:
    """`BreakerLink.sync` timed, with the shared opening read every `sync_s` seconds."""
    settings = BreakerSettings(url=redis_url, sync_s=sync_s)
    shared = RedisBreakers(redis_url, 1.0, f"llmroute-bench-{uuid.uuid4().hex[:8]}")
    link = BreakerLink(CircuitBreaker(settings), shared, "p:m")
    samples = []
    try:
        await link.sync()  # the first read is due whatever sync_s says
        for _ in range(CALLS):
            start = time.perf_counter_ns()
            await link.sync()
            samples.append((time.perf_counter_ns() - start) / 1e3)
    finally:
        await shared.aclose()
    return samples


def _redis_ok(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError):
        return False
    return True


def _with_cache(path: Path, cache: dict[str, Any] | None) -> None:
    data = yaml.safe_load(path.read_text())
    data.pop("cache", None)
    if cache is not None:
        data["cache"] = cache
    data.setdefault("telemetry", {})["enabled"] = False
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def through_gateway(args: argparse.Namespace, redis_url: str | None) -> list[dict[str, Any]]:
    """Every gateway runs at once; the (gateway, mode) points are measured in turn,
    `args.rounds` times over, and each point reports its medians (the machine is shared
    and noisy: interleaving spreads the noise over all points alike)."""
    setups: list[tuple[str, dict[str, Any] | None]] = [("off", None), ("memory", {})]
    if redis_url is not None:
        ns = f"llmroute-bench-{uuid.uuid4().hex[:8]}"
        setups.append(("redis", {"url": redis_url, "namespace": ns, "timeout_s": 0.2}))
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        upstream() as (up_url, up_pid),
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        body_file = bodies(tmp, "auto")
        points: list[tuple[str, str, str, int, tuple[str, ...]]] = []
        for name, cache in setups:
            registry = tmp / f"registry-{name}.yaml"
            bench_registry(registry, up_url, args.encoder)
            _with_cache(registry, cache)
            url, pid = stack.enter_context(gateway(registry, 1, tmp))
            for line in body_file.read_text().splitlines():  # store every prompt once
                httpx.post(f"{url}/v1/chat/completions", content=line, timeout=30)
            if cache is None:
                points.append((name, "upstream", url, pid, ()))
            else:
                points.append((name, "hit", url, pid, ()))
                points.append((name, "miss+store", url, pid, ("cache-control: no-cache",)))
        for round_no in range(args.rounds):
            for name, mode, url, pid, headers in points:
                log(f"  round {round_no + 1}: {name} {mode}")
                result = measure(url, body_file, 1, args, pid, up_pid, headers)
                samples.setdefault((name, mode), []).append(result)
    rows = []
    for (name, mode), runs in samples.items():
        row: dict[str, Any] = {"cache": name, "mode": mode, "rounds": len(runs)}
        for field in ("p50_ms", "p99_ms", "cpu_ms_per_req", "rps"):
            row[field] = float(statistics.median(float(r.get(field, 0.0)) for r in runs))
        cpu = [float(r.get("cpu_ms_per_req", 0.0)) for r in runs]
        row["cpu_min"], row["cpu_max"] = min(cpu), max(cpu)
        rows.append(row)
    return rows


def report(out: dict[str, Any], info: dict[str, Any]) -> str:
    lines = [
        "## Response cache",
        "",
        f"Measured {info['date']} on {info['nproc']} CPUs, {info['cpu']}, Python "
        f"{info['python']}. Command: `{info['command']}`.",
        "",
        "In-process (µs, p50 / p99):",
        "",
        "| what | p50 | p99 |",
        "|---|---|---|",
    ]
    for name, stats in out["in_process"].items():
        lines.append(f"| {name} | {stats['p50_us']:.1f} | {stats['p99_us']:.1f} |")
    lines += [
        "",
        f"Through `llmroute serve` (encoder {out['encoder']}, one connection, instant "
        "upstream; medians of the rounds, the gateway's CPU time also as min–max):",
        "",
        "| cache | requests | p50 ms | p99 ms | gateway CPU ms/request (min–max) | requests/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in out["gateway"]:
        lines.append(
            f"| {row['cache']} | {row['mode']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['cpu_ms_per_req']:.2f} ({row['cpu_min']:.2f}–{row['cpu_max']:.2f}) | "
            f"{row['rps']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--encoder", default="static", choices=["static", "minilm-int8"])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--in-process-only", action="store_true", help="skip part 2")
    args = parser.parse_args()
    redis_url = args.redis if args.redis and _redis_ok(args.redis) else None
    if redis_url is None:
        log(f"Redis at {args.redis} is not reachable: its rows are left out")
    log("in-process")
    out = {"encoder": args.encoder, "in_process": in_process(redis_url)}
    log("through the gateway")
    out["gateway"] = [] if args.in_process_only else through_gateway(args, redis_url)
    info = machine()
    if args.json:
        dump_json({"machine": info, **out})
    else:
        print(report(out, info))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
