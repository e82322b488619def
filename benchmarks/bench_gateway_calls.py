"""What one plain chat request costs the gateway's own code, counted exactly: the ASGI
app of `llmroute serve` called in process (no uvicorn, no socket to the gateway:
``httpx.ASGITransport``), in front of gateway_overhead.py's fake upstream on 127.0.0.1,
telemetry off, the 60 prompts of examples/eval.jsonl in turn, with a pool model
(``small``, routing off) and with ``auto`` (the static encoder's decision).

    .venv/bin/python benchmarks/bench_gateway_calls.py [--requests 1500] [--port 0]
        [--dump PREFIX]

Prints one JSON object: for each model, Python function calls a request (cProfile over
300 requests after 200 warm-up ones) and CPU µs a request (``time.process_time`` over
`--requests`, without the profiler). The calls are deterministic but for a few event-loop
turns, so they tell a change of a handful of calls a request apart where the load of a
shared machine hides it from `gateway_overhead.py`'s CPU time; compare two trees by
running this with each tree's ``src`` on ``PYTHONPATH`` in alternating rounds.
``--dump PREFIX`` writes each model's profile to ``PREFIX_<model>.pstats``, to see which
functions a difference is.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from gateway_overhead import PROMPTS, bench_registry, upstream

WARMUP = 200
PROFILED = 300
MODELS = ("small", "auto")


async def measure(registry: str, requests: int, dump: str | None) -> dict[str, Any]:
    from llmroute.server.app import create_app

    texts = [json.loads(line)["text"] for line in PROMPTS.read_text().splitlines() if line]
    app = create_app(registry)
    out: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            for model in MODELS:

                async def one(i: int, model: str = model) -> None:
                    message = {"role": "user", "content": texts[i % len(texts)]}
                    body = {"model": model, "max_tokens": 64, "messages": [message]}
                    answer = await client.post("/v1/chat/completions", json=body)
                    if answer.status_code != 200:
                        raise SystemExit(f"{model}: {answer.status_code} {answer.text}")

                for i in range(WARMUP):
                    await one(i)
                profile = cProfile.Profile()
                profile.enable()
                for i in range(PROFILED):
                    await one(i)
                profile.disable()
                if dump:
                    profile.dump_stats(f"{dump}_{model}.pstats")
                calls = pstats.Stats(profile).total_calls / PROFILED  # type: ignore[attr-defined]
                cpu0 = time.process_time()
                for i in range(requests):
                    await one(i)
                cpu_us = (time.process_time() - cpu0) / requests * 1e6
                out[model] = {"calls": calls, "cpu_us": cpu_us}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--port", type=int, default=0, help="the fake upstream's port")
    parser.add_argument("--dump", metavar="PREFIX", help="write PREFIX_<model>.pstats")
    args = parser.parse_args()
    os.environ["LLMROUTE_TELEMETRY_URL"] = "off"
    with tempfile.TemporaryDirectory() as tmp, upstream(args.port) as (url, _pid):
        registry = Path(tmp) / "registry.yaml"
        bench_registry(registry, url, "static")
        print(json.dumps(asyncio.run(measure(str(registry), args.requests, args.dump))))


if __name__ == "__main__":
    main()
