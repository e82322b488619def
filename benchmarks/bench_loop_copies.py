"""Copies of a large answer made on the event loop: the longest stretch the loop's own
thread works without giving a 1 ms ticker its turn, in thread CPU time.

``GET /health`` polled beside a 43 MB answer (`bench_large_bodies.py`) cannot tell a
20-40 ms copy from what the machine's load adds to the slowest poll; the loop thread's
CPU time between two ticks can (time a thread waits for the CPU, or for the GIL while
another thread copies, is not counted). Each step runs in this process, on uvloop as
`llmroute serve` runs (``--loop asyncio``: asyncio's own loop):

- ``upstream-read``: the largest embeddings answer (43 MB) read from a fake upstream on
  loopback (`HttpTransport.post_json`, its vectors kept as they came);
- ``answer-json``: that answer written for the client (`answer_json`);
- ``redis-set``: the answer written to Redis in one ``SET`` (a batch's part is written
  so; ``--redis URL``, 127.0.0.1:6379 by default).

    .venv/bin/python benchmarks/bench_loop_copies.py [--runs 5] [--loop asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from _common import machine
from bench_large_answers import _embeddings, upstream

from llmroute.providers._transport import HttpTransport
from llmroute.providers.base import Timeouts
from llmroute.verbatim_json import answer_json


async def _held(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """The longest thread-CPU stretch between two turns of a ticker while `work` runs,
    and `work`'s wall time (ms)."""
    gaps: list[float] = []
    done = False

    async def tick() -> None:
        last = time.thread_time()
        while not done:
            await asyncio.sleep(0.001)
            now = time.thread_time()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await work()
    took = time.perf_counter() - started
    done = True
    await ticker
    return max(gaps) * 1000, took * 1000


async def _measure(runs: int, redis_url: str) -> dict[str, list[tuple[float, float]]]:
    raw = _embeddings("float")
    rows: dict[str, list[tuple[float, float]]] = {}
    with upstream({"e": raw}) as url:
        transport = HttpTransport("up", url, {})

        async def read() -> dict[str, Any]:
            body = {"model": "e", "input": "x"}
            return await transport.post_json("/embeddings", body, Timeouts(60), verbatim=("data",))

        answer = await read()
        rows["upstream-read"] = [await _held(read) for _ in range(runs)]
        rows["answer-json"] = [await _held(lambda: answer_json(answer)) for _ in range(runs)]
        await transport.aclose()
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url)
    try:
        key = "llmroute-bench:loop-copies"
        write = lambda: client.set(key, raw, px=60_000)  # noqa: E731
        rows["redis-set"] = [await _held(write) for _ in range(runs)]
        await client.delete(key)
    finally:
        await client.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    run = uvloop.run if args.loop == "uvloop" else asyncio.run
    rows = run(_measure(args.runs, args.redis))
    print("| step | loop thread's longest stretch, ms (least / each run) | wall ms (least) |")
    print("|---|---|---|")
    for name, runs in rows.items():
        held = [round(h, 1) for h, _ in runs]
        print(f"| {name} | {min(held)} / {held} | {round(min(w for _, w in runs))} |")
    print(machine())


if __name__ == "__main__":
    main()
