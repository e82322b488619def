"""CPU time of one streamed request in the dispatcher alone, in process: below the noise
of `gateway_overhead.py --stream` on a shared machine (no HTTP server, no decision).

`Dispatcher.open_stream` on a one-model registry against benchmarks/_http_bench.py's fake
upstream (its own process; a role chunk, 20 content chunks, a finish chunk, a usage chunk),
each stream read to its end; `time.process_time` over --streams streams, after 200 to warm
up, --passes times. Prints one JSON line: events a stream, the median µs a stream and each
pass's. Run it against another tree with that tree's `src` on PYTHONPATH, and under
``python -m cProfile -o out.pstats`` to count what a stream calls.

    python benchmarks/bench_stream_dispatch.py [--streams 1000] [--passes 5] [--upstream-port P]
        [--null-usage] [--answer LIMIT]

--null-usage: the upstream's chunks say ``"usage":null``, as OpenAI's do for a stream
that asks for usage (as the dispatcher's always do); the client's body here does not.
--answer: each event is also read into a `StreamedAnswer(LIMIT)`, as the gateway's relay
reads a stream's answer for the decision log (``max_response_chars``: 32000 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llmroute.decision import Decision
from llmroute.dispatch import Dispatcher, Plan
from llmroute.providers import build_providers
from llmroute.registry import parse_registry
from llmroute.telemetry.shadow import StreamedAnswer

HELPER = Path(__file__).resolve().parent / "_http_bench.py"
REGISTRY = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%s/v1"}
models:
  small: {provider: up, model: fake}
routes:
  - {name: r, examples: [hello], target: small}
default: {target: small}
"""
BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": True}


async def _one(dispatcher: Dispatcher, plan: Plan, answer: int | None = None) -> int:
    opened = await dispatcher.open_stream(plan, dict(BODY))
    events = 0
    if answer is None:
        async for _ in opened.events:
            events += 1
        return events
    read = StreamedAnswer(answer)
    async for event in opened.events:
        read.observe(event)
        events += 1
    read.text()
    return events


async def _run(
    url: str, streams: int, passes: int, answer: int | None = None
) -> tuple[int, list[float]]:
    registry = parse_registry(REGISTRY % url).registry
    decision = Decision("d", "r", "small", "bench", 1.0, None, "bench", "v", (), 0.0, 0.0)
    plan = Plan(decision, ("small",), registry.route("r").policy, None)
    dispatcher = Dispatcher(registry, build_providers(registry))
    try:
        for _ in range(200):
            events = await _one(dispatcher, plan, answer)
        out = []
        for _ in range(passes):
            started = time.process_time()
            for _ in range(streams):
                await _one(dispatcher, plan, answer)
            out.append((time.process_time() - started) / streams * 1e6)
        return events, out
    finally:
        await dispatcher.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000, help="streams a pass")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--upstream-port", type=int, default=0, help="the fake upstream's (0: any)")
    parser.add_argument("--null-usage", action="store_true", help='chunks say "usage":null')
    parser.add_argument("--answer", type=int, help="read each answer up to this many chars")
    args = parser.parse_args()
    upstream = subprocess.Popen(
        [
            sys.executable,
            str(HELPER),
            "upstream",
            "--port",
            str(args.upstream_port),
            *(["--null-usage"] if args.null_usage else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert upstream.stdout is not None
        url = f"http://127.0.0.1:{int(upstream.stdout.readline().split()[1])}"
        events, passes = asyncio.run(_run(url, args.streams, args.passes, args.answer))
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    result = {"events": events, "us_per_stream": statistics.median(passes), "passes": passes}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
