"""Background responses (``background: true`` on ``/v1/responses``, registry
``stored_responses``): how long the create call takes when the model takes seconds, how
soon a poll sees the answer once the model has given it, whether many run at once, and,
with ``stream: true``, how soon the stream's first event and its last come and how long
resuming a finished one takes.

    .venv/bin/python benchmarks/bench_background.py [--model-s 1.0] [--requests 40]
        [--store memory|redis://127.0.0.1:6379/15] [--json]

One `llmroute serve` in front of the fake OpenAI-compatible upstream of the tests
(tests/support/fake_upstream.py), whose model waits ``--model-s`` seconds before it
answers. First ``--requests`` background requests one after another (the create call's
latency; a plain request to an instant model beside it, for scale); then the same number
at once, polled every 20 ms until all are done (the wall time against the model's);
then ``--requests`` background streams one after another (a model whose first event
comes after ``--model-s``), each resumed after its second event once it has ended.
Everything runs on 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import dump_json, log, machine, percentiles

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from fake_upstream import fake_upstream  # noqa: E402
from gateway_proc import serve_text  # noqa: E402

REGISTRY = """
encoder: builtin:static
providers:
  oa: {kind: openai, base_url: "%(url)s", timeout_s: 60}
models:
  thinker: {provider: oa, model: "thinker?delay=%(delay)s"}
  streamer: {provider: oa, model: "streamer?ttft=%(delay)s"}
  instant: {provider: oa, model: instant}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: instant
default: {target: instant}
stored_responses: {url: "%(store)s", namespace: "bench-background"}
"""
POLL_S = 0.02


async def _until_done(client: httpx.AsyncClient, response_id: str, limit_s: float) -> float:
    """Poll until the response has ended; when that was seen (perf_counter)."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        r = await client.get(f"/v1/responses/{response_id}")
        if r.json().get("status") not in ("queued", "in_progress"):
            if r.json().get("status") != "completed":
                raise SystemExit(f"background response ended {r.json().get('status')}")
            return time.perf_counter()
        await asyncio.sleep(POLL_S)
    raise SystemExit("a background response was not done in time")


async def _measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        body = {"model": "thinker", "input": "think it over", "background": True}
        create_us, plain_us, seen_after_s = [], [], []
        for _ in range(args.requests):
            started = time.perf_counter()
            r = await client.post("/v1/responses", json=body)
            created = time.perf_counter()
            assert r.status_code == 200 and r.json()["status"] == "in_progress", r.text
            create_us.append((created - started) * 1e6)
            done = await _until_done(client, r.json()["id"], args.model_s + 30)
            seen_after_s.append(done - started - args.model_s)
            started = time.perf_counter()
            r = await client.post("/v1/responses", json={"model": "instant", "input": "hi"})
            plain_us.append((time.perf_counter() - started) * 1e6)

        started = time.perf_counter()
        made = await asyncio.gather(
            *(client.post("/v1/responses", json=body) for _ in range(args.requests))
        )
        ids = [r.json()["id"] for r in made]
        await asyncio.gather(*(_until_done(client, i, args.model_s + 60) for i in ids))
        together_s = time.perf_counter() - started
        streamed = await _streams(client, args)
    return {
        **streamed,
        "create_us": percentiles(create_us),
        "plain_instant_request_us": percentiles(plain_us),
        "completion_seen_after_model_s": percentiles([s * 1e6 for s in seen_after_s]),
        "all_at_once_wall_s": round(together_s, 2),
    }


async def _streams(client: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, Any]:
    body = {"model": "streamer", "input": "think it over", "background": True, "stream": True}
    first_us, last_after_s, resume_us = [], [], []
    for _ in range(args.requests):
        started = time.perf_counter()
        first, response_id, last = None, "", ""
        async with client.stream("POST", "/v1/responses", json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                last = line
                if first is None:
                    first = time.perf_counter()
                    response_id = json.loads(line[6:])["response"]["id"]
        assert first is not None and '"response.completed"' in last, last
        last_after_s.append(time.perf_counter() - started - args.model_s)
        first_us.append((first - started) * 1e6)
        started = time.perf_counter()
        params = {"stream": "true", "starting_after": "1"}
        r = await client.get(f"/v1/responses/{response_id}", params=params)
        assert r.status_code == 200 and "response.completed" in r.text, r.text
        resume_us.append((time.perf_counter() - started) * 1e6)
    return {
        "stream_first_event_us": percentiles(first_us),
        "stream_last_event_after_model_us": percentiles([s * 1e6 for s in last_after_s]),
        "stream_resume_finished_us": percentiles(resume_us),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, fake_upstream() as upstream:
        values = {"url": upstream.url, "delay": args.model_s, "store": args.store}
        env = {"LLMROUTE_TELEMETRY_URL": "off"}
        with serve_text(REGISTRY % values, Path(tmp), env=env) as served:
            result = asyncio.run(_measure(served.url, args))
    return {"machine": machine(), "model_s": args.model_s, "store": args.store, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-s", type=float, default=1.0, help="the model's answer time")
    parser.add_argument("--requests", type=int, default=40, help="background requests per part")
    parser.add_argument("--store", default="memory", help="memory or a Redis URL")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        dump_json(result)
        return
    us = result["create_us"]
    log(f"store {args.store}, model answers in {args.model_s:g} s, {args.requests} requests")
    log(
        f"create call (background): p50 {us['p50_us'] / 1e3:.2f} ms, "
        f"p90 {us['p90_us'] / 1e3:.2f} ms"
    )
    plain = result["plain_instant_request_us"]
    log(f"plain request, instant model: p50 {plain['p50_us'] / 1e3:.2f} ms (for scale)")
    seen = result["completion_seen_after_model_s"]
    log(
        f"completion seen by a 20 ms poll after the model's time: p50 {seen['p50_us'] / 1e3:.0f} ms"
    )
    log(f"{args.requests} at once, all done after {result['all_at_once_wall_s']} s")
    first = result["stream_first_event_us"]["p50_us"] / 1e3
    last = result["stream_last_event_after_model_us"]["p50_us"] / 1e3
    resumed = result["stream_resume_finished_us"]["p50_us"] / 1e3
    log(
        f"background stream: first event p50 {first:.2f} ms, last event {last:.0f} ms after "
        f"the model's time; resuming a finished one p50 {resumed:.2f} ms"
    )


if __name__ == "__main__":
    main()
