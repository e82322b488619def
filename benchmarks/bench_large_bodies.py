"""Large bodies the gateway's event loop must not wait on: how long ``GET /health``
waits while each is handled by `llmroute serve` (one worker).

- ``embeddings-ascii`` (for comparison), ``embeddings-utf8``, ``embeddings-escaped``: the
  largest embeddings answer (2,048 x 1,536 floats, 43 MB) from a fake upstream on
  loopback, plain ASCII, or with a character that is not, or a ``\\u00e9`` escape, in
  its ``model``;
- ``batch-embeddings``: a batch of two embeddings requests, each answered so;
- ``upload-over-quota``: a 95 MB file uploaded by a key whose ``batches.max_key_bytes``
  it passes (a 429: the key holds 10 MB of its 100 MB).

``/health`` is polled every 20 ms from another thread; its p50 and slowest poll are
printed for each run, with the gateway process's CPU time meanwhile. Everything runs on
127.0.0.1; every loop is bounded.

    .venv/bin/python benchmarks/bench_large_bodies.py [--port 18200] [--runs 3] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _common import machine
from bench_large_answers import INPUTS, _embeddings, _poll, upstream
from gateway_overhead import process

_UPLOAD_LINES = 460_000  # ~95 MB of chat lines


def _answers() -> dict[str, bytes]:
    plain = _embeddings("float")
    return {
        "embeddings-utf8": plain.replace(b'"up-embed"', '"up-embed-é"'.encode()),
        "embeddings-escaped": plain.replace(b'"up-embed"', b'"up-embed-\\u00e9"'),
        "embeddings-ascii": plain,
        "embeddings-batch": plain,
    }


def _registry(url: str) -> str:
    models = "\n".join(
        f"  {name}: {{provider: up, model: {name}, kind: embedding}}" for name in _answers()
    )
    return (
        "encoder: builtin:static\n"
        f"providers:\n  up: {{kind: openai, base_url: '{url}', timeout_s: 120}}\n"
        "  chat: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
        f"models:\n{models}\n  c: {{provider: chat, model: c}}\n"
        "routes:\n  - {name: r, examples: ['hi there'], target: c}\n"
        "default: {target: c}\n"
        "dispatch:\n  retries: {attempts: 1}\n"
        "batches: {max_key_bytes: 100000000, max_file_bytes: 100000000}\n"
    )


def _while_polled(url: str, work: Callable[[], None]) -> tuple[float, list[float]]:
    polls: list[float] = []
    stop = threading.Event()
    thread = threading.Thread(target=_poll, args=(url, polls, stop))
    thread.start()
    time.sleep(0.2)
    started = time.perf_counter()
    try:
        work()
    finally:
        took = time.perf_counter() - started
        time.sleep(0.1)
        stop.set()
        thread.join()
    return took, polls


def _cpu_s(pid: int) -> float:
    """The process's user and system CPU seconds so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _embed(client: httpx.Client, url: str, model: str) -> None:
    body = {"model": model, "input": ["hello"] * INPUTS}
    reply = client.post(f"{url}/v1/embeddings", json=body)
    assert reply.status_code == 200, reply.text[:300]


def _batch(client: httpx.Client, url: str, file_id: str) -> None:
    body = {"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
    made = client.post(f"{url}/v1/batches", json=body)
    assert made.status_code == 200, made.text[:300]
    for _ in range(1200):  # at most 60 s
        batch = client.get(f"{url}/v1/batches/{made.json()['id']}").json()
        if batch["status"] in ("completed", "failed"):
            assert batch["status"] == "completed", batch
            return
        time.sleep(0.05)
    raise SystemExit("the batch did not end within 60 s")


def _batch_file(client: httpx.Client, url: str) -> str:
    lines = [
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "embeddings-batch", "input": ["hello"] * INPUTS},
            }
        )
        for i in range(2)
    ]
    files = {"file": ("in.jsonl", "\n".join(lines).encode())}
    reply = client.post(f"{url}/v1/files", data={"purpose": "batch"}, files=files)
    assert reply.status_code == 200, reply.text[:300]
    return str(reply.json()["id"])


def _filler(client: httpx.Client, url: str) -> None:
    files = {"file": ("filler.jsonl", b"{}\n" * 3_500_000)}
    reply = client.post(f"{url}/v1/files", data={"purpose": "batch"}, files=files)
    assert reply.status_code == 200, reply.text[:300]


def _upload(client: httpx.Client, url: str, content: bytes) -> None:
    files = {"file": ("big.jsonl", content)}
    reply = client.post(f"{url}/v1/files", data={"purpose": "batch"}, files=files)
    assert reply.status_code == 429, reply.text[:300]


def _big_file() -> bytes:
    line = json.dumps(
        {
            "custom_id": "r%07d",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "c", "messages": [{"role": "user", "content": "hi " * 20}]},
        }
    )
    return "\n".join(line % i for i in range(_UPLOAD_LINES)).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=18200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    answers = _answers()
    big = _big_file()
    url = f"http://127.0.0.1:{args.port}"
    rows = []
    with upstream(answers) as up, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.yaml"
        path.write_text(_registry(up), encoding="utf-8")
        command = ["llmroute", "serve", "-r", str(path), "--port", str(args.port)]
        log = Path(tmp) / "log"
        with (
            process([*command, "--no-access-log"], f"{url}/ready", log) as proc,
            httpx.Client(timeout=300) as client,
        ):
            file_id = _batch_file(client, url)
            _filler(client, url)  # 10 MB held: the 95 MB upload passes the key's 100 MB
            cases: dict[str, Callable[[], None]] = {
                "embeddings-ascii": lambda: _embed(client, url, "embeddings-ascii"),
                "embeddings-utf8": lambda: _embed(client, url, "embeddings-utf8"),
                "embeddings-escaped": lambda: _embed(client, url, "embeddings-escaped"),
                "batch-embeddings": lambda: _batch(client, url, file_id),
                "upload-over-quota": lambda: _upload(client, url, big),
            }
            for name in args.only or list(cases):
                cases[name]()  # warm
                for _ in range(args.runs):
                    cpu = _cpu_s(proc.pid)
                    took, polls = _while_polled(url, cases[name])
                    cpu = _cpu_s(proc.pid) - cpu
                    row: dict[str, Any] = {
                        "case": name,
                        "took_ms": round(took * 1000),
                        "server_cpu_ms": round(cpu * 1000),
                        "health_p50_ms": round(statistics.median(polls) * 1000, 1),
                        "health_max_ms": round(max(polls) * 1000),
                        "polls": len(polls),
                    }
                    rows.append(row)
                    print(row, flush=True)
    print(machine())


if __name__ == "__main__":
    main()
