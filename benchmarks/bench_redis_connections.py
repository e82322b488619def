"""How many connections to Redis one `llmroute serve` holds with every Redis-backed
feature on (limits and budgets, shared breakers, response cache with its semantic
index, affinity, stored responses, batches), during and after a burst of requests.

    .venv/bin/python benchmarks/bench_redis_connections.py [--redis redis://127.0.0.1:6379/15]
        [--burst 200] [--workers 1] [--timeout-s 0.5] [--json]

The burst is ``--burst`` requests at once through the echo provider (every fourth a
stored ``/v1/responses`` request, the others chat completions, all different so that
each misses the cache and is stored). Redis is asked for its ``CLIENT LIST`` every
10 ms: the peak and the count once the burst is over are the connections in
``--redis``'s database, which must be the benchmark's alone (the same count whatever
version of llmroute runs, named or not), and by ``llmroute:<pid>`` name per process.
``--timeout-s`` gives every section that ``timeout_s`` (one pool per process); without
it each keeps its default. Everything runs on 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis
from _common import dump_json, log, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from gateway_proc import serve_text  # noqa: E402

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
cache: {url: "%(redis)s", namespace: bench-connections, semantic: {}%(timeout)s}
affinity: {url: "%(redis)s", namespace: bench-connections%(timeout)s}
stored_responses: {url: "%(redis)s", namespace: bench-connections%(timeout)s}
batches: {url: "%(redis)s", namespace: bench-connections%(timeout)s}
dispatch:
  limits: {url: "%(redis)s", namespace: bench-connections%(timeout)s}
  breaker: {url: "%(redis)s", namespace: bench-connections%(timeout)s}
"""


class Watch:
    """Samples ``CLIENT LIST`` (the clients in `url`'s database but this one) in a
    thread until stopped; `peak` is the most seen at once."""

    def __init__(self, url: str) -> None:
        self._admin = redis.Redis.from_url(url)
        self._me = self._admin.client_id()
        self._db = str(self._admin.connection_pool.connection_kwargs.get("db", 0))
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def clients(self) -> list[dict[str, Any]]:
        listed = self._admin.client_list()
        return [c for c in listed if c["db"] == self._db and int(c["id"]) != self._me]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, len(self.clients()))
            time.sleep(0.01)

    def close(self) -> None:
        self._admin.close()

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


async def _burst(url: str, n: int) -> tuple[Counter[int], float]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(i: int) -> int:
            if i % 4 == 0:
                reply = await client.post("/v1/responses", json={"model": "auto", "input": f"{i}"})
            else:
                messages = [{"role": "user", "content": f"hello number {i}"}]
                body = {"model": "auto", "messages": messages}
                reply = await client.post("/v1/chat/completions", json=body)
            return reply.status_code

        started = time.perf_counter()
        codes = await asyncio.gather(*(one(i) for i in range(n)))
        return Counter(codes), time.perf_counter() - started


def run(url: str, burst: int, workers: int, timeout_s: float | None) -> dict[str, Any]:
    timeout = "" if timeout_s is None else f", timeout_s: {timeout_s}"
    text = REGISTRY % {"redis": url, "timeout": timeout}
    watch = Watch(url)
    before = len(watch.clients())
    with (
        tempfile.TemporaryDirectory() as folder,
        serve_text(text, Path(folder), ["--workers", str(workers)]) as served,
    ):
        with watch:
            codes, took = asyncio.run(_burst(served.url, burst))
            time.sleep(0.3)
        after = watch.clients()
        warnings = served.log_text().count("unavailable")
    time.sleep(0.5)
    left = len(watch.clients())
    watch.close()
    return {
        "burst": burst,
        "workers": workers,
        "timeout_s": timeout_s,
        "statuses": {str(k): v for k, v in sorted(codes.items())},
        "burst_s": round(took, 2),
        "before": before,
        "peak": watch.peak,
        "after_burst": len(after),
        "after_burst_by_name": dict(Counter(c.get("name") or "(unnamed)" for c in after)),
        "after_shutdown": left,
        "unavailable_warnings": warnings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.redis, args.burst, args.workers, args.timeout_s)
    if args.json:
        dump_json({"machine": machine(), **result})
    else:
        log(" ".join(f"{key}={value}" for key, value in result.items()))


if __name__ == "__main__":
    main()
