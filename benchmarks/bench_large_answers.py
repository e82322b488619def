"""Large upstream answers: what the gateway's worker spends on one, and whether it keeps
answering other requests meanwhile.

A fake OpenAI-compatible upstream on loopback (a thread of this process, the real HTTP
protocol) answers with prebuilt bodies: the largest embeddings answer OpenAI allows
(2,048 inputs x 1,536 floats, as floats or as ``encoding_format: base64``) and large
chat completions (1 MB of content; 8,192 tokens of logprobs with 20 alternatives each;
128 choices). `llmroute serve` (one worker) passes each on while ``GET /health`` is
polled every 20 ms; the slowest poll says how long the event loop was held.

    .venv/bin/python benchmarks/bench_large_answers.py [--json] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
from _common import machine
from gateway_overhead import free_port, process

INPUTS, DIMENSIONS = 2048, 1536


def _vectors() -> np.ndarray[Any, np.dtype[np.float32]]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((INPUTS, DIMENSIONS)) * 0.03).astype(np.float32)


def _embeddings(encoding: str) -> bytes:
    """OpenAI's answer: floats as its API writes them (float32 values, shortest repr)."""
    data: list[dict[str, Any]] = []
    for i, row in enumerate(_vectors()):
        if encoding == "base64":
            vector: Any = base64.b64encode(struct.pack(f"<{DIMENSIONS}f", *row)).decode()
        else:
            vector = [float(f"{x:.9g}") for x in row.tolist()]
        data.append({"object": "embedding", "index": i, "embedding": vector})
    usage = {"prompt_tokens": 2048 * 8, "total_tokens": 2048 * 8}
    answer = {"object": "list", "data": data, "model": "up-embed", "usage": usage}
    return json.dumps(answer, separators=(",", ":")).encode()


def _chat(choices: list[dict[str, Any]]) -> bytes:
    answer = {
        "id": "chatcmpl-big",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "up-chat",
        "choices": choices,
        "usage": {"prompt_tokens": 10, "completion_tokens": 8192, "total_tokens": 8202},
    }
    return json.dumps(answer, separators=(",", ":")).encode()


def _choice(index: int, content: str, logprobs: Any = None) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {"index": index, "message": message, "finish_reason": "stop", "logprobs": logprobs}


def _logprobs(tokens: int, alternatives: int) -> dict[str, Any]:
    def entry(i: int) -> dict[str, Any]:
        token = f" w{i % 997}"
        return {"token": token, "logprob": -((i % 89) / 7.3), "bytes": list(token.encode())}

    content = [
        {**entry(i), "top_logprobs": [entry(i + k) for k in range(alternatives)]}
        for i in range(tokens)
    ]
    return {"content": content, "refusal": None}


def bodies() -> dict[str, tuple[str, bytes]]:
    """name -> (gateway endpoint, the upstream's answer)."""
    words = "".join(f" w{i % 997}" for i in range(8192))
    return {
        "embeddings-floats": ("/v1/embeddings", _embeddings("float")),
        "embeddings-base64": ("/v1/embeddings", _embeddings("base64")),
        "chat-content-1mb": ("/v1/chat/completions", _chat([_choice(0, "x" * 1_000_000)])),
        "chat-logprobs-8k": (
            "/v1/chat/completions",
            _chat([_choice(0, words, _logprobs(8192, 20))]),
        ),
        "chat-128-choices": (
            "/v1/chat/completions",
            _chat([_choice(i, words[:4000]) for i in range(128)]),
        ),
    }


@contextmanager
def upstream(answers: dict[str, bytes]) -> Iterator[str]:
    """Answers each POST with the body named by the request's ``model`` (or by the URL's
    ``?model=``: the body is then not parsed, which in this process would hold the GIL
    while a large request's time is measured)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            named = parse_qs(urlsplit(self.path).query).get("model")
            raw = answers[named[0] if named else json.loads(body)["model"]]
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def registry(url: str, names: list[str]) -> str:
    models = "\n".join(
        f"  {name}: {{provider: up, model: {name}, kind: "
        f"{'embedding' if name.startswith('embeddings') else 'chat'}}}"
        for name in names
    )
    return (
        "encoder: builtin:static\n"
        f"providers:\n  up: {{kind: openai, base_url: '{url}', timeout_s: 120}}\n"
        f"models:\n{models}\n"
        "routes:\n  - {name: r, examples: ['hi there'], target: chat-content-1mb}\n"
        "default: {target: chat-content-1mb}\n"
        "dispatch:\n  retries: {attempts: 1}\n"
    )


def _request(name: str, endpoint: str) -> dict[str, Any]:
    if endpoint == "/v1/embeddings":
        encoding = "base64" if name.endswith("base64") else "float"
        return {"model": name, "input": ["hello"] * INPUTS, "encoding_format": encoding}
    return {"model": name, "messages": [{"role": "user", "content": "hi"}]}


def _poll(url: str, polls: list[float], stop: threading.Event) -> None:
    with httpx.Client(timeout=60) as poller:
        while not stop.is_set():
            started = time.perf_counter()
            poller.get(f"{url}/health")
            polls.append(time.perf_counter() - started)
            time.sleep(0.02)


def measure(url: str, name: str, endpoint: str, runs: int) -> dict[str, Any]:
    body = _request(name, endpoint)
    totals, worst, sizes = [], [], []
    with httpx.Client(timeout=300) as client:
        client.post(f"{url}{endpoint}", json=body)  # warm
        for _ in range(runs):
            polls: list[float] = []
            stop = threading.Event()
            thread = threading.Thread(target=_poll, args=(url, polls, stop))
            thread.start()
            time.sleep(0.2)
            started = time.perf_counter()
            reply = client.post(f"{url}{endpoint}", json=body)
            totals.append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.text[:300]
            sizes.append(len(reply.content))
            time.sleep(0.1)
            stop.set()
            thread.join()
            worst.append(max(polls))
    return {
        "answer": name,
        "bytes_out": sizes[-1],
        "request_ms": round(min(totals) * 1000),
        "health_max_ms": [round(w * 1000) for w in worst],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--only", nargs="*", help="answers to measure (default: all)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    made = bodies()
    names = args.only or list(made)
    rows = []
    with upstream({n: made[n][1] for n in made}) as up, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.yaml"
        path.write_text(registry(up, list(made)), encoding="utf-8")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = ["llmroute", "serve", "-r", str(path), "--port", str(port), "--no-access-log"]
        with process(command, f"{url}/ready", Path(tmp) / "log"):
            for name in names:
                endpoint, raw = made[name]
                row = {"bytes_in": len(raw), **measure(url, name, endpoint, args.runs)}
                rows.append(row)
                if not args.json:
                    print(row, flush=True)
    if args.json:
        print(json.dumps({"machine": machine(), "rows": rows}, indent=2))
        return
    print(machine())
    print("| answer | upstream bytes | request ms (best) | slowest /health poll ms (each run) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['answer']} | {r['bytes_in']:,} | {r['request_ms']} | {r['health_max_ms']} |")


if __name__ == "__main__":
    main()
