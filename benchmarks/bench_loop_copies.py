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
  so; ``--redis URL``, 127.0.0.1:6379 by default);
- ``request-body``: a 3 MB request body of token ids (an embeddings input) read and
  parsed (`read_json_object`, each integer checked by a Python call);
- ``upstream-body``: that input sent upstream (`HttpTransport.post_json`: its body
  written, 2.5 MB; a small answer);
- ``upstream-signed``: a 20 MB prompt sent upstream signed with SigV4 (as Bedrock's
  are: the body hashed);
- ``mask-queued``: a 300 kB chat answer's PII masked (`server.chat._for_client`) while
  the loop's default executor (6 threads, as on 2 CPUs) is in six 1 s blocking calls,
  as a remote encoder's decisions are for their round trips.

``--clock wall`` measures the gaps in wall time instead, which counts the waits for the
CPU and for the GIL (work moved to a thread that keeps the GIL shows there).

    .venv/bin/python benchmarks/bench_loop_copies.py [--runs 5] [--loop asyncio] [--clock wall]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvloop
from _common import machine
from bench_large_answers import _embeddings, upstream
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message

from llmroute.decision import SafetyOutcome
from llmroute.providers._transport import HttpTransport
from llmroute.providers.aws_sigv4 import AwsCredentials, sign
from llmroute.providers.base import Timeouts
from llmroute.registry.schema import SafetyProfile
from llmroute.safety.answer_pii import AnswerMask
from llmroute.safety.pii import PiiDetector
from llmroute.server import chat
from llmroute.server.body import read_json_object
from llmroute.verbatim_json import answer_json

_CLOCK = time.thread_time  # ``--clock wall``: time.perf_counter


async def _held(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """The longest thread-CPU stretch (`_CLOCK`) between two turns of a ticker while
    `work` runs, and `work`'s wall time (ms)."""
    gaps: list[float] = []
    done = False

    async def tick() -> None:
        last = _CLOCK()
        while not done:
            await asyncio.sleep(0.001)
            now = _CLOCK()
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
    ids = {"model": "s", "input": [[1234] * 500] * 1000}
    prompt = {"model": "s", "messages": [{"role": "user", "content": "long text " * 2_000_000}]}
    with upstream({"e": raw, "s": b'{"object":"list","data":[],"model":"s"}'}) as url:
        transport = HttpTransport("up", url, {})
        signed = HttpTransport("up", url, {}, sign=_sigv4)

        async def read() -> dict[str, Any]:
            body = {"model": "e", "input": "x"}
            return await transport.post_json("/embeddings", body, Timeouts(60), verbatim=("data",))

        answer = await read()
        rows["upstream-read"] = [await _held(read) for _ in range(runs)]
        rows["answer-json"] = [await _held(lambda: answer_json(answer)) for _ in range(runs)]
        send = lambda: transport.post_json("/embeddings?model=s", ids, Timeouts(60))  # noqa: E731
        rows["upstream-body"] = [await _held(send) for _ in range(runs)]
        send = lambda: signed.post_json("/chat/completions?model=s", prompt, Timeouts(60))  # noqa: E731
        rows["upstream-signed"] = [await _held(send) for _ in range(runs)]
        await transport.aclose()
        await signed.aclose()
    sent = json.dumps({"model": "e", "input": [[1234] * 500] * 1000}).encode()
    rows["request-body"] = [
        await _held(lambda: read_json_object(_request(sent), 8 << 20)) for _ in range(runs)
    ]
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=6) as default:
        loop.set_default_executor(default)
        rows["mask-queued"] = []
        for _ in range(runs):  # the executor's six threads each in a 1 s blocking call
            busy = asyncio.gather(*(asyncio.to_thread(time.sleep, 1.0) for _ in range(6)))
            await asyncio.sleep(0.01)
            rows["mask-queued"].append(await _held(_mask))
            await busy
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


def _sigv4(method: str, url: Any, body: bytes) -> Mapping[str, str]:
    keys = AwsCredentials("AKIDEXAMPLE", "secret")
    return sign(method, url, body, credentials=keys, region="us-east-1", service="bedrock")


_MASK = AnswerMask(PiiDetector(["EMAIL"]), SafetyProfile(answer_pii={"EMAIL": "redact"}))
_ANSWER = {"choices": [{"message": {"content": "Mail a@b.example. " + "Plain text. " * 25_000}}]}


async def _mask() -> None:
    safety = SafetyOutcome(profile="p", action="allow", answer_mask=_MASK)
    await chat._for_client(JSONResponse(_ANSWER), safety)


def _request(body: bytes) -> Request:
    """A request whose body comes in 64 KiB chunks, as a client's does."""
    chunks = [body[at : at + 65536] for at in range(0, len(body), 65536)]

    async def receive() -> Message:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    # wall: the gaps count time waiting for the CPU and for the GIL too (work in a
    # thread that keeps the GIL shows there, not in thread CPU)
    parser.add_argument("--clock", choices=["thread", "wall"], default="thread")
    args = parser.parse_args()
    global _CLOCK
    _CLOCK = time.perf_counter if args.clock == "wall" else time.thread_time
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
