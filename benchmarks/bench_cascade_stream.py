"""What a buffered cascade stream costs the client: time to first byte (TTFB) and to the
last byte, ``stream: buffer`` vs ``passthrough`` vs no cascade, against the fake
upstream of the test suite (a real HTTP server on 127.0.0.1).

The first tier answers WORDS words after a first-token delay of TTFT seconds and GAP
seconds between words, and its answer passes the heuristic gate; buffering makes the
client wait for all of it before the first byte. A second scenario has the first tier
refuse, so the buffered request escalates to the second tier (streamed live).

    python benchmarks/bench_cascade_stream.py [--runs 5] [--ttft 0.2] [--gap 0.01] [--words 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from fake_upstream import fake_upstream

from llmroute.decision import Decision
from llmroute.dispatch import Dispatcher, Plan
from llmroute.providers import build_providers
from llmroute.registry import parse_registry

REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 30}
models:
  small: {provider: up, model: '%(small)s'}
  large: {provider: up, model: '%(large)s'}
routes:
  - {name: r, examples: [hello], target: small, cascade: %(cascade)s}
default: {target: large}
"""


async def one(dispatcher: Dispatcher, plan: Plan) -> tuple[float, float]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.perf_counter()
    opened = await dispatcher.open_stream(plan, body)
    first = None
    async for _ in opened.events:
        if first is None:
            first = time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started


def measure(
    url: str, small: str, large: str, cascade: str | None, runs: int
) -> tuple[float, float]:
    text = REGISTRY % {
        "url": url,
        "small": small,
        "large": large,
        "cascade": cascade or "[small, large]",
    }
    registry = parse_registry(text).registry
    decision = Decision("d", "r", "small", "bench", 1.0, None, "bench", "v", (), 0.0, 0.0)
    route = registry.route("r")
    plan = Plan(decision, ("small",), route.policy, route.cascade if cascade else None)

    async def main() -> list[tuple[float, float]]:
        dispatcher = Dispatcher(registry, build_providers(registry))
        try:
            await one(dispatcher, plan)  # warm the connection pool
            return [await one(dispatcher, plan) for _ in range(runs)]
        finally:
            await dispatcher.aclose()

    results = asyncio.run(main())
    return (
        statistics.median(r[0] for r in results) * 1000,
        statistics.median(r[1] for r in results) * 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ttft", type=float, default=0.2)
    parser.add_argument("--gap", type=float, default=0.01)
    parser.add_argument("--words", type=int, default=50)
    args = parser.parse_args()
    stream = f"ttft={args.ttft}&gap={args.gap}"
    good = quote(" ".join(["word"] * args.words))
    refusal = quote("I'm sorry, but I can't help with that. " + " ".join(["x"] * args.words))
    scenarios = [
        ("first tier accepted", f"small?reply={good}&{stream}"),
        ("first tier refuses", f"small?reply={refusal}&{stream}"),
    ]
    modes = [
        ("no cascade", None),
        ("passthrough", "{tiers: [small, large], stream: passthrough}"),
        ("buffer", "{tiers: [small, large], stream: buffer}"),
    ]
    print(f"ttft={args.ttft}s gap={args.gap}s words={args.words} runs={args.runs} (medians)")
    print(f"{'scenario':<22}{'mode':<14}{'TTFB ms':>10}{'total ms':>10}")
    with fake_upstream() as upstream:
        for label, small in scenarios:
            large = f"large?{stream}&reply={good}"
            for mode, cascade in modes:
                ttfb, total = measure(upstream.url, small, large, cascade, args.runs)
                print(f"{label:<22}{mode:<14}{ttfb:>10.1f}{total:>10.1f}")


if __name__ == "__main__":
    main()
