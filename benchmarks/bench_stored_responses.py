"""What kept Responses-API responses cost per turn (registry ``stored_responses``): keeping a
response (`ResponseStore.put`: its turn serialised, set, its chain's expiry renewed) and
reading the conversation a continuation carries on (`ResponseStore.chain`: a GET,
then one MGET of the turns before it, each parsed), at several conversation lengths,
in memory and in Redis.

    .venv/bin/python benchmarks/bench_stored_responses.py [--turns 1,10,50]
        [--turn-chars 1000,8000] [--calls 200] [--redis redis://127.0.0.1:6379/15] [--json]

A turn is one user message and one answer of ``turn-chars`` characters between them
(8,000: an agent's turn with a tool's output). Without ``--redis`` (or when it cannot be
reached) only memory is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from _common import dump_json, log, machine, percentiles

from llmroute.registry.schema import StoredResponsesSettings
from llmroute.state.stored_responses import (
    ResponseStore,
    StoredResponse,
    new_response_id,
    with_ids,
)
from llmroute.state.stores import MemoryStore, RedisStore, StoreUnavailable


def _turn(chars: int, chain: list[str]) -> StoredResponse:
    response_id = new_response_id()
    half = "x" * (chars // 2)
    output = [
        {
            "type": "message",
            "id": f"msg_{response_id[5:]}",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": half, "annotations": []}],
        }
    ]
    response = {"id": response_id, "object": "response", "status": "completed", "output": output}
    items = with_ids([{"type": "message", "role": "user", "content": half}], response_id)
    return StoredResponse(response, items, chain)


async def _time(store: ResponseStore, turns: int, chars: int, calls: int) -> dict[str, Any]:
    chain: list[str] = []
    for _ in range(turns - 1):  # the conversation so far
        record = _turn(chars, chain)
        await store.put("bench", record)
        chain = [*chain, record.id]
    puts, reads = [], []
    for _ in range(calls):
        record = _turn(chars, chain)
        started = time.perf_counter()
        await store.put("bench", record)
        puts.append((time.perf_counter() - started) * 1e6)
        started = time.perf_counter()
        conversation = await store.chain("bench", record.id)
        reads.append((time.perf_counter() - started) * 1e6)
        assert conversation is not None and len(conversation.earlier) == 2 * (turns - 1)
    return {
        "turns": turns,
        "turn_chars": chars,
        "record_bytes": len(record.to_bytes()),
        "put_us": percentiles(puts),
        "read_us": percentiles(reads),
    }


async def _backend(
    name: str, store: ResponseStore, args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    for turns in args.turns:
        for chars in args.turn_chars:
            row = {"store": name, **await _time(store, turns, chars, args.calls)}
            put, read = row["put_us"], row["read_us"]
            log(
                f"{name:6} turns={turns:3} chars={chars:5}"
                f"  put p50 {put['p50_us']:8.1f} µs p99 {put['p99_us']:8.1f}"
                f"   read p50 {read['p50_us']:8.1f} µs p99 {read['p99_us']:8.1f}"
            )
            rows.append(row)
    await store.aclose()
    return rows


async def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = StoredResponsesSettings(ttl_s=600)
    memory = ResponseStore(settings, MemoryStore(1_000_000, 1 << 31))
    rows = await _backend("memory", memory, args)
    if args.redis:
        namespace = f"llmroute-bench-{uuid.uuid4().hex[:8]}"
        redis_settings = StoredResponsesSettings(url=args.redis, ttl_s=60, namespace=namespace)
        redis = ResponseStore(redis_settings, RedisStore(args.redis, timeout_s=2.0))
        try:
            rows += await _backend("redis", redis, args)
        except StoreUnavailable as exc:
            log(f"redis skipped: {exc}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", default="1,10,50")
    parser.add_argument("--turn-chars", default="1000,8000")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--redis", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.turns = [int(t) for t in args.turns.split(",")]
    args.turn_chars = [int(c) for c in args.turn_chars.split(",")]
    rows = asyncio.run(_run(args))
    if args.json:
        dump_json({"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
