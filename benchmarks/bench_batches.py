"""Batches (OpenAI's Batch API on ``/v1/files`` and ``/v1/batches``, registry
``batches``): how fast a batch's requests are answered next to the same requests sent
live, whether ``concurrency`` paces a slow model as it says, and what uploading the file
and downloading the answers cost.

    .venv/bin/python benchmarks/bench_batches.py [--requests 2000] [--concurrency 8]
        [--model-s 0.1] [--yield-s 0.05] [--store memory|redis://127.0.0.1:6379/15] [--json]

One `llmroute serve` (decision log off) in front of the fake OpenAI-compatible upstream
of the tests (tests/support/fake_upstream.py). Part 1: ``--requests`` chat requests to an
instant model, as one batch (from the create call until a 50 ms poll sees it completed),
then live over HTTP, ``--concurrency`` at a time, as a client would send them. Part 2:
``--concurrency`` × 10 requests to a model that answers in ``--model-s`` as a batch: its
wall time against the ideal (10 × model time). Part 3: the latency of live requests sent
one at a time, with no batch running, then for 3 s while a batch of ``--requests`` × 5
instant requests runs (the worst case: a batch whose model answers at once keeps the
process busy), and how fast the batch goes meanwhile (``--yield-s``: how long each batch
request waits for live ones to finish; 0 never). Everything runs on 127.0.0.1; every
loop is bounded.
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
  instant: {provider: oa, model: instant}
  slow: {provider: oa, model: "slow?delay=%(delay)s"}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: instant
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: instant
default: {target: instant}
batches:
  {url: "%(store)s", namespace: bench-batches, concurrency: %(concurrency)d, yield_s: %(yield_s)s}
"""
POLL_S = 0.05
PROMPTS = ("write a Python function to parse YAML", "hi, how are you?", "what is 2 + 2?")


def _file(n: int, model: str) -> bytes:
    lines = []
    for i in range(n):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"{PROMPTS[i % len(PROMPTS)]} ({i})"}],
        }
        line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
        lines.append(json.dumps({**line, "body": body}))
    return ("\n".join(lines) + "\n").encode()


async def _batch(client: httpx.AsyncClient, content: bytes, limit_s: float) -> dict[str, Any]:
    """Upload `content`, run it as a batch and download its answers; the timings."""
    started = time.perf_counter()
    r = await client.post(
        "/v1/files", files={"file": ("b.jsonl", content)}, data={"purpose": "batch"}
    )
    assert r.status_code == 200, r.text
    uploaded = time.perf_counter()
    body = {
        "input_file_id": r.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    r = await client.post("/v1/batches", json=body)
    assert r.status_code == 200, r.text
    batch_id = r.json()["id"]
    created = time.perf_counter()
    deadline = created + limit_s
    while True:
        batch = (await client.get(f"/v1/batches/{batch_id}")).json()
        if batch["status"] not in ("validating", "in_progress", "finalizing"):
            break
        if time.perf_counter() > deadline:
            raise SystemExit("the batch was not done in time")
        await asyncio.sleep(POLL_S)
    done = time.perf_counter()
    if batch["status"] != "completed" or batch["request_counts"]["failed"]:
        raise SystemExit(f"the batch ended {batch['status']}: {batch}")
    r = await client.get(f"/v1/files/{batch['output_file_id']}/content")
    answers = r.content.count(b"\n")
    downloaded = time.perf_counter()
    assert answers == batch["request_counts"]["total"], answers
    return {
        "upload_ms": round((uploaded - started) * 1e3, 1),
        "run_s": round(done - created, 3),
        "download_ms": round((downloaded - done) * 1e3, 1),
        "file_bytes": len(content),
        "output_bytes": len(r.content),
    }


async def _live(client: httpx.AsyncClient, content: bytes, concurrency: int) -> float:
    """The file's requests sent over HTTP, `concurrency` at a time; the wall time."""
    bodies = [json.loads(line)["body"] for line in content.splitlines()]
    pending = iter(bodies)

    async def worker() -> None:
        for body in pending:
            r = await client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _live_latency(client: httpx.AsyncClient, n: int) -> list[float]:
    """`n` live requests one after another; each one's latency (µs)."""
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi, how are you?"}]}
    took = []
    for _ in range(n):
        started = time.perf_counter()
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        took.append((time.perf_counter() - started) * 1e6)
    return took


async def _during_batch(client: httpx.AsyncClient, content: bytes) -> tuple[list[float], float]:
    """Live latencies while a batch of `content` runs, and the batch's requests/s
    meanwhile (its count moves each second: measured over whole seconds)."""
    r = await client.post(
        "/v1/files", files={"file": ("b.jsonl", content)}, data={"purpose": "batch"}
    )
    body = {
        "input_file_id": r.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    batch_id = (await client.post("/v1/batches", json=body)).json()["id"]
    while (await client.get(f"/v1/batches/{batch_id}")).json()["status"] == "validating":
        await asyncio.sleep(0.01)
    before = await _completed(client, batch_id)
    started = time.perf_counter()
    took: list[float] = []
    while time.perf_counter() - started < 3.0:  # bounded: 3 s of live requests
        took += await _live_latency(client, 20)
    after = await _completed(client, batch_id)
    status = (await client.get(f"/v1/batches/{batch_id}")).json()["status"]
    if status != "in_progress":
        raise SystemExit(f"the batch ended ({status}) before the live requests: make it larger")
    await client.post(f"/v1/batches/{batch_id}/cancel")
    return took, (after[0] - before[0]) / max(1e-9, after[1] - before[1])


async def _completed(client: httpx.AsyncClient, batch_id: str) -> tuple[int, float]:
    """The batch's completed count as soon as it moves (it is updated each second), and
    when it was seen."""
    first = (await client.get(f"/v1/batches/{batch_id}")).json()["request_counts"]["completed"]
    for _ in range(200):  # at most 2 s
        await asyncio.sleep(0.01)
        counts = (await client.get(f"/v1/batches/{batch_id}")).json()["request_counts"]
        if counts["completed"] != first:
            return counts["completed"], time.perf_counter()
    raise SystemExit("the batch's count did not move in 2 s")


async def _measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        content = _file(args.requests, "auto")
        await _live(client, _file(50, "auto"), args.concurrency)  # warm up
        batch = await _batch(client, content, 600)
        live_s = await _live(client, content, args.concurrency)
        paced_n = args.concurrency * 10
        paced = await _batch(client, _file(paced_n, "slow"), 600)
        idle = await _live_latency(client, 300)
        busy, beside = await _during_batch(client, _file(args.requests * 5, "auto"))
    return {
        "live_latency_idle_us": percentiles(idle),
        "live_latency_during_batch_us": percentiles(busy),
        "live_requests_during_batch": len(busy),
        "batch_requests_per_s_beside_live": round(beside, 1),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "batch": batch,
        "batch_requests_per_s": round(args.requests / batch["run_s"], 1),
        "live_s": round(live_s, 3),
        "live_requests_per_s": round(args.requests / live_s, 1),
        "paced": {
            "requests": paced_n,
            "model_s": args.model_s,
            "run_s": paced["run_s"],
            "ideal_s": round(10 * args.model_s, 3),
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, fake_upstream() as upstream:
        values = {
            "url": upstream.url,
            "delay": args.model_s,
            "store": args.store,
            "concurrency": args.concurrency,
            "yield_s": args.yield_s,
        }
        env = {"LLMROUTE_TELEMETRY_URL": "off"}
        with serve_text(REGISTRY % values, Path(tmp), env=env) as served:
            result = asyncio.run(_measure(served.url, args))
    return {"machine": machine(), "store": args.store, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests in the batch")
    parser.add_argument("--concurrency", type=int, default=8, help="batches.concurrency")
    parser.add_argument(
        "--yield-s", type=float, default=0.05, help="batches.yield_s (0: batches never wait)"
    )
    parser.add_argument("--model-s", type=float, default=0.1, help="the slow model's time")
    parser.add_argument("--store", default="memory", help="memory or a Redis URL")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        dump_json(result)
        return
    batch = result["batch"]
    log(f"store {args.store}, {args.requests} requests, concurrency {args.concurrency}")
    log(
        f"batch: {result['batch_requests_per_s']} requests/s ({batch['run_s']} s); live over "
        f"HTTP: {result['live_requests_per_s']} requests/s ({result['live_s']} s)"
    )
    log(
        f"upload {batch['file_bytes'] / 1e3:.0f} kB: {batch['upload_ms']} ms; download "
        f"{batch['output_bytes'] / 1e3:.0f} kB: {batch['download_ms']} ms"
    )
    paced = result["paced"]
    log(
        f"paced: {paced['requests']} requests to a {paced['model_s']:g} s model in "
        f"{paced['run_s']} s (ideal {paced['ideal_s']} s)"
    )
    idle = result["live_latency_idle_us"]
    busy = result["live_latency_during_batch_us"]
    log(
        f"live request latency p50 / p90: idle {idle['p50_us'] / 1e3:.2f} / "
        f"{idle['p90_us'] / 1e3:.2f} ms; during an instant-model batch "
        f"{busy['p50_us'] / 1e3:.2f} / {busy['p90_us'] / 1e3:.2f} ms "
        f"({result['live_requests_during_batch']} requests in 3 s), the batch meanwhile "
        f"{result['batch_requests_per_s_beside_live']} requests/s"
    )


if __name__ == "__main__":
    main()
