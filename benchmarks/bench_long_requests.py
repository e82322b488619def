"""Long requests: what deciding a pasted document costs, and whether the gateway keeps
answering others meanwhile.

1. In process: `Router.decide` on examples/registry.yaml (minilm-int8, safety on) for
   prompts of 10k to 656k characters, dense with PII (a phone number and an e-mail every
   41 characters: the worst case for the PII scan) and plain prose; total time and the
   safety layer's share.
2. Through `llmroute serve`: ``GET /health`` polled every 20 ms while one 656 kB request
   is decided (``POST /v1/route``); the slowest poll says whether the event loop stalled.

    .venv/bin/python benchmarks/bench_long_requests.py [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _common import ROOT, machine
from gateway_overhead import free_port, process

from llmroute import Router

EXAMPLE = ROOT / "examples" / "registry.yaml"
DENSE = "call me at 555-123-4567 or mail a@b.com. "
SIZES = (10_000, 41_000, 164_000, 656_000)


def _prose(size: int) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return (text * (size // len(text) + 1))[:size]


def decide_times() -> list[dict[str, Any]]:
    router = Router.from_yaml(EXAMPLE)
    router.decide({"messages": [{"role": "user", "content": "hello"}]})  # warm
    rows = []
    for kind in ("pii-dense", "prose"):
        for size in SIZES:
            text = (
                (DENSE * (size // len(DENSE) + 1))[:size] if kind == "pii-dense" else _prose(size)
            )
            started = time.perf_counter()
            decision = router.decide({"messages": [{"role": "user", "content": text}]})
            total = time.perf_counter() - started
            safety = sum(s.elapsed_us for s in decision.signals if s.layer == "safety") / 1000
            rows.append(
                {"text": kind, "chars": size, "decide_ms": round(total * 1000, 1),
                 "safety_ms": round(safety, 1)}
            )  # fmt: skip
    return rows


def loop_check(size: int = 656_000) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = ["llmroute", "serve", "-r", str(EXAMPLE), "--port", str(port), "--no-access-log"]
    body = json.dumps({"messages": [{"role": "user", "content": DENSE * (size // len(DENSE))}]})
    with tempfile.TemporaryDirectory() as tmp, process(command, f"{url}/ready", Path(tmp) / "log"):
        polls: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    started = time.perf_counter()
                    client.get(f"{url}/health")
                    polls.append(time.perf_counter() - started)
                    time.sleep(0.02)

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.3)
        started = time.perf_counter()
        reply = httpx.post(f"{url}/v1/route", content=body, timeout=300)
        long_s = time.perf_counter() - started
        time.sleep(0.2)
        stop.set()
        poller.join()
    polls.sort()
    return {
        "chars": size,
        "status": reply.status_code,
        "long_request_ms": round(long_s * 1000, 1),
        "health_polls": len(polls),
        "health_p50_ms": round(polls[len(polls) // 2] * 1000, 1),
        "health_max_ms": round(polls[-1] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    out = {"machine": machine(), "decide": decide_times(), "loop": loop_check()}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(out["machine"])
    print("| text | chars | decide ms | safety ms |\n|---|---|---|---|")
    for row in out["decide"]:
        print(f"| {row['text']} | {row['chars']} | {row['decide_ms']} | {row['safety_ms']} |")
    loop = out["loop"]
    print(
        f"\n{loop['chars']}-char request: {loop['status']} in {loop['long_request_ms']} ms; "
        f"/health polled {loop['health_polls']} times meanwhile, p50 "
        f"{loop['health_p50_ms']} ms, slowest {loop['health_max_ms']} ms"
    )


if __name__ == "__main__":
    main()
