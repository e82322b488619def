"""The two processes of benchmarks/gateway_overhead.py that are not the gateway: a fast
fake OpenAI-compatible upstream and a closed-loop HTTP/1.1 load generator. Both use the
standard library only (raw asyncio, keep-alive connections), so neither is the
bottleneck of what they measure, and each runs in its own process:

    python benchmarks/_http_bench.py upstream [--port 0] [--null-usage]
        prints ``listening PORT`` once bound; answers every request with one fixed
        ``chat.completion`` (with usage; a ``text_completion`` on ``/completions``)
        until killed. With --null-usage a stream's chunks carry ``"usage":null``, as
        OpenAI writes them when the request asks for usage (the gateway's always do).

    python benchmarks/_http_bench.py load URL BODIES_JSONL --concurrency C --duration S
        [--max-requests N] [--warmup N] [--header 'k: v' ...] [--stream]
        C connections, each sending the next request as soon as the last answer is read;
        the request bodies are the lines of BODIES_JSONL, taken in turn. A chunked
        answer is read to its last chunk, and timed to it; with --stream, one whose body
        does not end with ``data: [DONE]`` counts as an error.
        After the warm-up requests it prints ``warm`` and waits for one line on stdin
        (the parent reads the gateway's CPU time there), then runs until S seconds have
        passed or N requests completed, and prints one JSON line: completed, errors,
        elapsed_s, rps, p50/p90/p99/mean latency in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from urllib.parse import urlsplit

import numpy as np

REPLY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    },
    separators=(",", ":"),
).encode()
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(REPLY),
    REPLY,
)
CLOSE_RESPONSE = RESPONSE.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1)
TEXT_REPLY = json.dumps(
    {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 1700000000,
        "model": "fake",
        "choices": [{"index": 0, "text": "ok", "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    },
    separators=(",", ":"),
).encode()
TEXT_RESPONSE = RESPONSE.replace(REPLY, TEXT_REPLY).replace(
    b"content-length: %d" % len(REPLY), b"content-length: %d" % len(TEXT_REPLY)
)
MAX_HEAD = 64 * 1024
STREAM_WORDS = 20
STREAM_REQUEST = re.compile(rb'"stream"\s*:\s*true')
DONE = b"data: [DONE]\n\n"


def _stream_response(null_usage: bool = False) -> bytes:
    """The fixed SSE answer to a chat request with ``"stream": true``, an event a chunk;
    `null_usage`: each chunk before the usage chunk says ``"usage":null``, as OpenAI's."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000}
    base["model"] = "fake"

    def chunk(delta: dict[str, str], finish: str | None) -> dict[str, object]:
        data = base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return data | {"usage": None} if null_usage else data

    events = [chunk({"role": "assistant", "content": ""}, None)]
    events += [chunk({"content": f"word{i} "}, None) for i in range(STREAM_WORDS)]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 9, "completion_tokens": STREAM_WORDS, "total_tokens": 29}
    events.append(base | {"choices": [], "usage": usage})
    datas = [b"data: %s\n\n" % json.dumps(e, separators=(",", ":")).encode() for e in events]
    body = b"".join(b"%x\r\n%s\r\n" % (len(d), d) for d in [*datas, DONE]) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    return head + b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n" + body


STREAM_RESPONSE = _stream_response()
NULL_USAGE_STREAM_RESPONSE = _stream_response(null_usage=True)


# --- the fake upstream ------------------------------------------------------------------


class _Upstream(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; reads Content-Length bodies (no chunked
    request bodies: neither httpx nor aiohttp sends one for a JSON POST)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self.transport.close()
                self.buffer = buf
                return
            head = buf[:end].lower()
            length = 0
            at = head.find(b"\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 1)
                length = int(head[at + 16 : stop if stop >= 0 else None])
            total = end + 4 + length
            if len(buf) < total:
                self.buffer = buf
                return
            body, buf = buf[end + 4 : total], buf[total:]
            if b"\nconnection: close" in head:
                self.transport.write(CLOSE_RESPONSE)
                self.transport.close()
                self.buffer = b""
                return
            # the legacy text API (models declared text_completions) gets its own shape
            text = head.startswith(b"post ") and b"/completions " in head[:128]
            text = text and b"/chat/completions " not in head[:128]
            if not text and STREAM_REQUEST.search(body):
                self.transport.write(STREAM_RESPONSE)
                continue
            self.transport.write(TEXT_RESPONSE if text else RESPONSE)


async def _serve_upstream(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", port, backlog=1024)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


# --- the load generator -----------------------------------------------------------------


class _Conn:
    def __init__(
        self, host: str, port: int, requests: list[bytes], first: int, stream: bool = False
    ) -> None:
        self.host, self.port, self.requests, self.next = host, port, requests, first
        self.stream = stream  # a chunked body must end with `data: [DONE]`
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def once(self) -> int:
        """One request on the kept-alive connection; its status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.requests[self.next % len(self.requests)])
        self.next += 1
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\ncontent-length:")
        if at >= 0:
            stop = lower.find(b"\r\n", at + 1)
            await self.reader.readexactly(int(lower[at + 16 : stop]))
        elif b"transfer-encoding: chunked" in lower:
            tail = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                tail = (tail + data[:-2])[-len(DONE) :]
            if self.stream and status == 200 and tail != DONE:
                raise ValueError("a stream that did not end with data: [DONE]")
        else:  # no length: the body runs to the end of the connection
            await self.reader.read()
            self.close()
        if b"\nconnection: close" in lower:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _load(
    url: str,
    bodies: list[bytes],
    headers: list[str],
    concurrency: int,
    duration: float,
    max_requests: int,
    warmup: int,
    timeout: float,
    stream: bool = False,
) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{h}\r\n" for h in headers)
    requests = [
        (
            f"POST {parts.path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
        ).encode()
        + body
        for body in bodies
    ]
    conns = [_Conn(host, port, requests, i * 7, stream) for i in range(concurrency)]
    latencies: list[int] = []
    errors: list[str] = []
    left = {"warm": warmup, "run": max_requests}
    deadline = [0.0]

    async def worker(conn: _Conn, phase: str) -> None:
        while left[phase] > 0 and (phase == "warm" or time.perf_counter() < deadline[0]):
            left[phase] -= 1
            started = time.perf_counter_ns()
            try:
                async with asyncio.timeout(timeout):
                    status = await conn.once()
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                conn.close()
                errors.append(type(exc).__name__)
                continue
            if status != 200:
                errors.append(f"HTTP {status}")
                continue
            if phase == "run":
                latencies.append(time.perf_counter_ns() - started)

    await asyncio.gather(*(worker(c, "warm") for c in conns))
    warm_errors = len(errors)
    errors.clear()
    print(json.dumps({"warm": True, "warm_errors": warm_errors}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    started = time.perf_counter()
    deadline[0] = started + duration
    await asyncio.gather(*(worker(c, "run") for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    ms = np.asarray(latencies, dtype=np.float64) / 1e6
    out: dict[str, float] = {
        "completed": len(latencies),
        "errors": len(errors),
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
    }
    if errors:
        out["first_error"] = errors[0]  # type: ignore[assignment]
    if ms.size:
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        out |= {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": float(ms.mean())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    up = sub.add_parser("upstream")
    up.add_argument("--port", type=int, default=0)
    up.add_argument("--null-usage", action="store_true", help='chunks say "usage":null')
    load = sub.add_parser("load")
    load.add_argument("url")
    load.add_argument("bodies_jsonl")
    load.add_argument("--concurrency", type=int, default=1)
    load.add_argument("--duration", type=float, default=5.0)
    load.add_argument("--max-requests", type=int, default=200_000)
    load.add_argument("--warmup", type=int, default=100)
    load.add_argument("--timeout", type=float, default=30.0)
    load.add_argument("--header", action="append", default=[])
    load.add_argument("--stream", action="store_true", help="check each stream's [DONE]")
    args = parser.parse_args()
    if args.what == "upstream":
        if args.null_usage:
            global STREAM_RESPONSE
            STREAM_RESPONSE = NULL_USAGE_STREAM_RESPONSE
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_upstream(args.port))
        return
    with open(args.bodies_jsonl, "rb") as handle:
        bodies = [line.strip() for line in handle if line.strip()]
    result = asyncio.run(
        _load(
            args.url,
            bodies,
            args.header,
            args.concurrency,
            args.duration,
            args.max_requests,
            args.warmup,
            args.timeout,
            args.stream,
        )
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
