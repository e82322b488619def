"""Chaos run of `llmroute serve`: many concurrent requests that hang up midway (streams
cut after a few events, clients that give up after a few milliseconds), while the
registry is reloaded (SIGHUP and file rewrites: two swap in a new version, one is
invalid and rejected), in front of a slow
fake upstream whose model has `max_in_flight` set. Then it checks what must hold after:

- nothing in flight (`llmroute_requests_in_flight` 0) and every in-flight slot given
  back (a burst of streams held open fills exactly the cap, the next spills over; with
  Redis limits, no slot left in Redis); with Redis limits the slow model also has a hard
  budget (far from spent), and no hold of it is left once everything has ended;
- every request in the decision log (SQLite, or ``--telemetry``'s PostgreSQL), none
  lost, whatever its ending (with ``--telemetry-trouble``: none lost uncounted): each is
  sent with ``x-llmroute-tags: chaos=ID`` (a batch line with ``tags``), and one with no
  row, or two, is named with its kind and what its client saw; but a client that gave
  up before its request was written whole (a pool, connect or write timeout: its 2 ms
  timeout on a loaded machine) may have sent the gateway nothing, and may have none;
- no 5xx but the 503 of a pinned model at its cap, no traceback in the gateway's log.

With ``--upstream-faults`` every fourth request goes instead (whole, patiently) to a
route whose upstream misbehaves the way real ones do: an error object sent with a 200
(OpenRouter), an overloaded error right after a keep-alive comment and the opening
chunk (Anthropic-like), a 401 for the gateway's key, a stream closed cleanly midway, an
error event after the first words. Checked too: each was answered by the route's
fallback, or (the last two, streamed) ended with the gateway's error event, never
passed on as an answer.

With ``--responses`` every fourth request (another quarter) is instead a three-turn
Responses-API conversation continued by ``previous_response_id`` or, every other one,
kept by the Conversations API (its second turn streamed; the third of one continued by id
made in the background and polled until done, the third of one kept by the Conversations
API a background stream left after its third event and resumed by ``GET …?stream=true&
starting_after``), in ``stored_responses`` where
``--limits`` says (memory or Redis; with several workers use Redis: each worker's memory
is its own). Checked too: every turn was answered and kept, and the whole conversation is
listed after.

With ``--batches`` four batches (Batch API, ``batches`` in the same store) of 120 chat
requests each, every fourth to a misbehaving upstream's route with ``--upstream-faults``,
run while the load and the reloads go on, polled (through any worker) until done.
Checked too: each completed, with one answer per request, every one a 200.

With ``--key-bound N`` (and ``--responses``) the store keeps at most N responses per
client key (``stored_responses.max_key_responses``): past it the least recently written
or continued is evicted, by every worker. Checked too, in Redis: at most N listed and N
kept, every record listed, the listing's byte count the sum of its sizes (and, as before,
every conversation continued whole, which needs N above what the conversations under
way hold: about 3 a conversation, 6 at a time, so 40 passes where 12 evicts chains
still being continued, as the bound says it will).

With ``--redis-trouble closed|db|flap`` (and a ``redis://`` ``--limits``, which the
harness reads) every Redis feature, the response cache with its semantic index and the
shared breakers too, is given a Redis it cannot use (a closed port; ``--limits``'s Redis
at a db past its ``databases``) or a proxy to ``--limits`` that hangs 1.5 s and goes away
1.5 s while the load runs (``flap``). After the load it sends a whole request twice, two
conversations and a batch (`_recovered`). Checked too (`_trouble_checks`): the start's
and each swap's Redis check said once per worker, each feature's failures counted about
once a second per process, the documented fallbacks (requests let through, the cache
missing, ``store: false``, 503 ``store_unavailable``) and, with ``flap``, every feature
using Redis again without a restart, no slot or hold left.

With ``--telemetry postgresql://...`` the decision log is in that PostgreSQL (a schema
of its own, ``chaos_…``, dropped after unless ``--keep``; the gateway's URL is given a
password when it has none, which trust auth ignores), else SQLite. With
``--telemetry-trouble closed|flap|hang`` the gateway reaches it through a proxy that,
from after a probe (40 whole requests to the echo model, once they are written) until
after the load and the same probe again, listens no more (every connection reset, new
ones refused), resets every connection for 1.5 s then lets them through for 1.5 s, or
stalls them (nothing passed on, either way) for 3 s then lets them through for 1.5 s.
Then requests are sent until one is written (bounded: 30 s) and ten more; the metrics are
read once the writer's queue is empty; and as the gateway stops PostgreSQL is in that
trouble again, five requests just sent. Checked too (`_telemetry_checks`): no 5xx but
a pinned model's 503, as the clients saw them (the table misses rows); the probe's p50
in trouble within 3 times (and 50 ms) its p50 before; every request or batch line whose
record is not in the table counted in ``llmroute_telemetry_dropped_total`` (at most those
whose client gave up before its request was written whole less), none twice; the log
writing again and all ten written; the gateway stopped within 10 s of SIGTERM; the
URL's password nowhere in serve.log or the metrics.

    .venv/bin/python benchmarks/chaos_gateway.py [--requests 300] [--concurrency 6]
        [--limits memory|redis://127.0.0.1:6379/15] [--workers 1] [--seed 5]
        [--upstream-faults] [--responses] [--batches] [--key-bound N] [--port 0]
        [--redis-trouble closed|db|flap] [--telemetry postgresql://...]
        [--telemetry-trouble closed|flap|hang] [--keep DIR] [--json]

Everything runs on 127.0.0.1 and every loop is bounded; the exit status is 1 when an
invariant failed. Its Redis keys (all under a namespace of its own, ``chaos-…``) are
deleted at the end, unless ``--keep`` (then the namespace is printed). The decision log,
the gateway's log and its last metrics are kept in ``--keep``'s folder, or, when a check
failed, in a ``chaos-kept-…`` one it prints (a PostgreSQL decision log stays in its
schema with ``--keep``, named on stderr). It found the Redis slot leak fixed on
2026-12-04 (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from fake_upstream import fake_upstream  # noqa: E402
from redis_service import with_db  # noqa: E402
from stall_proxy import StallProxy, stall_proxy  # noqa: E402

BIN = Path(sys.executable).parent
CAP = 3
REGISTRY = """
encoder: builtin:static
providers:
  oa: {kind: openai, base_url: "%(url)s", timeout_s: 10}
  ec: {kind: echo, delay_s: 0.01}
models:
  slow: {provider: oa, model: "slow?gap=0.03&delay=0.1", max_in_flight: %(cap)d,
         price: {input: 1, output: 1}%(slow_budget)s}
  spill: {provider: ec, model: echo-spill, price: {input: 1, output: 1}}
%(faulty_models)sroutes:
  - name: r
    examples: ["hello there", "tell me a story"]
    target: %(target)s
    policy: {fallback: [spill]}
%(faulty_routes)sdefault: {target: slow}
dispatch:
  limits: {url: "%(limits)s", namespace: "%(namespace)s"}
%(breaker)saffinity: {mode: upgrade%(affinity)s}
cache: {ttl_s: %(cache_ttl)d%(cache)s}  # a new version each generation: a real swap
stored_responses: {url: "%(limits)s", namespace: "%(namespace)s"%(key_bound)s}
batches: {url: "%(limits)s", namespace: "%(namespace)s", concurrency: 4}
telemetry: {url: "sqlite:///%(db)s", prompts: hash}
# generation %(generation)s
"""
WORDS = " ".join(f"w{i}" for i in range(40))
# Upstreams that misbehave, by fake-upstream fault: whether a stream of theirs ends broken
# (the answer had begun) rather than being answered by the fallback. A stream cut
# cleanly midway answers whole requests well, until its broken streams have opened its
# breaker (a breaker hears how a stream ended); the others fail whole requests too, which
# opens their breakers, after which the fallback answers their streams too.
FAULTS = {
    "or200": ("inbody=502", False),
    "early": ("inbody=529&early=1&ping=1", False),
    "locked": ("status=401", False),
    "cut": ("truncate=1", True),
    "late": ("inbody=502&late=1", True),
}


def _registry(
    url: str, db: Path, args: argparse.Namespace, namespace: str, gen: int, limits: str
) -> str:
    """The registry of generation `gen`, every Redis feature at `limits` (the URL the
    gateway is given: `args.limits`, or with ``--redis-trouble`` one it cannot use or a
    proxy; then the response cache, its semantic index and the breakers too)."""
    redis = limits.startswith("redis")
    trouble = bool(args.redis_trouble)
    faulty = FAULTS if args.upstream_faults else {}
    return REGISTRY % {
        "faulty_models": "".join(
            f'  {name}: {{provider: oa, model: "{name}?{fault}"}}\n'
            for name, (fault, _) in faulty.items()
        ),
        "faulty_routes": "".join(
            f'  - {{name: f-{name}, examples: ["{name} {name}"], target: {name},'
            " policy: {fallback: [spill]}}\n"
            for name in faulty
        ),
        "url": url,
        "db": db,
        "cap": CAP,
        "target": "nope" if gen % 4 == 3 else "slow",  # every second rewrite is invalid
        "limits": limits,
        "namespace": namespace,
        "affinity": f', url: "{limits}", namespace: "{namespace}"' if redis else "",
        "cache": f', url: "{limits}", namespace: "{namespace}", semantic: {{}}' if trouble else "",
        "breaker": f'  breaker: {{url: "{limits}", namespace: "{namespace}"}}\n' if trouble else "",
        "generation": gen,
        "key_bound": f", max_key_responses: {args.key_bound}" if args.key_bound else "",
        "cache_ttl": 30 + gen,
        # with Redis, a hard budget far from spent: every call holds and settles
        "slow_budget": ", budget: {usd: 1000, hard: true}, max_output_tokens: 256" if redis else "",
    }


async def _faulty(client: httpx.AsyncClient, rng: random.Random, i: int, ledger: Ledger) -> str:
    """One whole request to a misbehaving upstream's route: ``fault NAME ok`` when it was
    answered by the fallback, or (a stream that had begun) ended with the gateway's
    error event; ``fault NAME wrong: ...`` otherwise."""
    name = list(FAULTS)[i % len(FAULTS)]
    broken_ok = FAULTS[name][1]
    stream = rng.random() < 0.5
    body = {"model": f"f-{name}", "messages": [{"role": "user", "content": f"{name} {i}"}]}
    rid = f"f{i}"
    headers = ledger.send(rid, f"fault {name} {'stream' if stream else 'whole'}")
    if not stream:
        r = await client.post("/v1/chat/completions", json=body, timeout=20.0, headers=headers)
        ledger.saw(rid, str(r.status_code))
        served = r.headers.get("x-llmroute-model")
        expected = {name, "spill"} if name == "cut" else {"spill"}
        fine = r.status_code == 200 and served in expected and "choices" in r.json()
        return f"fault {name} {'ok' if fine else f'wrong: {r.status_code} {served}'}"
    sent = {**body, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=sent, headers=headers) as r:
        text = (await r.aread()).decode()
    ledger.saw(rid, f"stream {r.status_code}")
    errored = '"error"' in text
    served = r.headers.get("x-llmroute-model")
    fine = r.status_code == 200 and text.rstrip().endswith("data: [DONE]")
    fell_back = not errored and served == "spill"
    fine = fine and (fell_back or (broken_ok and errored and served == name))
    return f"fault {name} {'ok' if fine else f'wrong: stream {r.status_code} {served}'}"


TURNS = 3


class Ledger:
    """Every request the run sends, by the id its ``x-llmroute-tags: chaos=ID`` carries
    into its decision-log row: its kind and what its client saw, so that a request
    without a row (or with two) is named, not only counted."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = {}
        self.seconds: dict[str, float] = {}  # from its sending to what its client saw

    def send(self, request_id: str, kind: str) -> dict[str, str]:
        """`request_id` about to be sent as `kind`: the headers that tag it."""
        self.sent[request_id] = [kind, "no answer"]
        self.seconds[request_id] = -time.perf_counter()
        return {TAGS: f"chaos={request_id}"}

    def saw(self, request_id: str, outcome: str) -> None:
        self.sent[request_id][1] = outcome
        self.seconds[request_id] += time.perf_counter()

    def slowest(self) -> tuple[str, float] | None:
        """The request answered slowest (a client that gave up or a stream it held open
        aside), and in how many seconds: none may hang on a Redis that does not answer."""
        waited = [
            (rid, s)
            for rid, s in self.seconds.items()
            if s > 0
            and not self.sent[rid][1].startswith(GAVE_UP)
            and "held open" not in self.sent[rid][0]
        ]
        return max(waited, key=lambda w: w[1], default=None)


TAGS = "x-llmroute-tags"
GAVE_UP = "gave up"
# a client that gave up before its request was written whole (waiting for a connection,
# opening one, writing it: a 2 ms timeout on a loaded machine) may have sent the gateway
# nothing, or part of it (answered 499 before any decision, in llmroute_api_errors_total)
NOT_WRITTEN = tuple(f"{GAVE_UP} ({t})" for t in ("PoolTimeout", "ConnectTimeout", "WriteTimeout"))


async def _conversation(client: httpx.AsyncClient, i: int, ledger: Ledger) -> str:
    """A three-turn Responses conversation (the second turn streamed), each turn
    continuing the last by id, or, every other time, kept by the Conversations API:
    ``conversation ok`` when every turn was answered and kept and the whole conversation
    is listed after; ``conversation wrong: ...`` otherwise."""
    previous: str | None = None
    conversation: str | None = None
    if i % 8 == 5:
        made = await client.post("/v1/conversations", json={})
        if made.status_code != 200:
            return f"conversation wrong: create {made.status_code} {_code(made)}"
        conversation = made.json()["id"]
    for turn in range(TURNS):
        body: dict[str, Any] = {"model": "r", "input": f"{WORDS} conversation {i} turn {turn}"}
        if conversation is not None:
            body["conversation"] = conversation
        elif previous is not None:
            body["previous_response_id"] = previous
        made = await _turn(client, body, turn, conversation is not None, ledger, f"c{i}t{turn}")
        if isinstance(made, str):
            return f"conversation wrong: turn {turn} {made}"
        response = made
        if response.get("store") is not True:
            return f"conversation not kept: turn {turn} answered store: false"
        previous = response["id"]
    if conversation is not None:
        listed = await client.get(f"/v1/conversations/{conversation}/items")
        expected = 2 * TURNS  # every input and every output
    else:
        listed = await client.get(f"/v1/responses/{previous}/input_items", params={"limit": 100})
        expected = 2 * TURNS - 1  # every input, and every output but the last
    items = listed.json().get("data", []) if listed.status_code == 200 else []
    if len(items) != expected:
        return (
            f"conversation wrong: {len(items)} items listed ({listed.status_code} {_code(listed)})"
        )
    return "conversation ok"


async def _streamed(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any] | str:
    """`body` streamed: the response its ``response.completed`` event holds, or what went
    wrong."""
    sent = {**body, "stream": True}
    async with client.stream("POST", "/v1/responses", json=sent, headers=headers) as r:
        text = (await r.aread()).decode()
    finals = [
        json.loads(line[6:])["response"]
        for line in text.splitlines()
        if line.startswith("data: ") and '"response.completed"' in line
    ]
    if r.status_code != 200 or not finals:
        return f"stream {r.status_code} {_code_of(text)}"
    response: dict[str, Any] = finals[0]
    return response


async def _turn(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    turn: int,
    kept_by_conversation: bool,
    ledger: Ledger,
    rid: str,
) -> dict[str, Any] | str:
    """One turn: the second streamed, the third made in the background (a resumed
    background stream where the Conversations API keeps it), the first plain."""
    kinds = ["responses", "responses stream"]
    kinds.append("responses background " + ("stream" if kept_by_conversation else "polled"))
    headers = ledger.send(rid, kinds[turn])
    made: dict[str, Any] | str
    if turn == 1:
        made = await _streamed(client, body, headers)
    elif turn == 2:
        make = _resumed if kept_by_conversation else _in_background
        made = await make(client, body, headers)
    else:
        r = await client.post("/v1/responses", json=body, timeout=20.0, headers=headers)
        made = r.json() if r.status_code == 200 else f"{r.status_code} {_code(r)}"
    ledger.saw(rid, made if isinstance(made, str) else f"200 {made.get('status')}")
    return made


async def _resumed(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any] | str:
    """`body` made as a background stream, left after its third event and resumed from
    there (bounded): the response its ``response.completed`` holds, or what went wrong."""
    seen, response_id = -1, None
    sent = {**body, "background": True, "stream": True}
    async with client.stream(
        "POST", "/v1/responses", json=sent, timeout=20.0, headers=headers
    ) as r:
        if r.status_code != 200:
            return f"background stream {r.status_code} {_code_of((await r.aread()).decode())}"
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                seen = event["sequence_number"]
                response_id = response_id or event["response"]["id"]
                if seen >= 2:
                    break  # the client hangs up: the run goes on
    if response_id is None:
        return "background stream: no event"
    params = {"stream": "true", "starting_after": str(seen)}
    url = f"/v1/responses/{response_id}"
    async with client.stream("GET", url, params=params, timeout=30.0) as r:
        text = (await r.aread()).decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    if r.status_code != 200 or not events or events[0]["sequence_number"] != seen + 1:
        return f"background stream resumed {r.status_code} {_code_of(text)}"
    if events[-1]["type"] != "response.completed":
        return f"background stream ended {events[-1]['type']} {events[-1].get('code')}"
    response: dict[str, Any] = events[-1]["response"]
    return response


async def _in_background(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any] | str:
    """`body` made in the background, polled (bounded) until it is done: the response, or
    what went wrong."""
    sent = {**body, "background": True}
    r = await client.post("/v1/responses", json=sent, timeout=20.0, headers=headers)
    if r.status_code != 200:
        return f"background {r.status_code} {_code(r)}"
    response: dict[str, Any] = r.json()
    for _ in range(400):
        if response.get("status") not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.05)
        r = await client.get(f"/v1/responses/{response['id']}")
        if r.status_code != 200:
            return f"background poll {r.status_code} {_code(r)}"
        response = r.json()
    status = response.get("status")
    return response if status == "completed" else f"background {status}"


def _code(r: httpx.Response) -> str:
    """An error answer's code, to tell failures apart in the outcomes."""
    return _code_of(r.text)


def _code_of(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


BATCHES, BATCH_LINES = 4, 120  # long enough to run across a reload


async def _batch(client: httpx.AsyncClient, k: int, faults: bool, done: set[int]) -> str:
    """One batch of `BATCH_LINES` chat requests (with `faults`, every fourth to a
    misbehaving upstream's route), polled until it ends: ``batch ok`` (`k` added to
    `done`) when it completed with one 200 answer per request; ``batch refused: ...``
    when its upload or creation was answered 503 ``store_unavailable`` (a Redis it
    cannot use); ``batch wrong: ...`` otherwise. A poll or read answered that 503 is
    made again, as a client would (Retry-After: 1)."""
    lines = []
    for n in range(BATCH_LINES):
        model = f"f-{list(FAULTS)[n % len(FAULTS)]}" if faults and n % 4 == 3 else "r"
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"batch {k} line {n}"}],
            "tags": [f"chaos=b{k}-{n}"],  # its record's, beside the gateway's batch=ID
        }
        line = {"custom_id": f"b{k}-{n}", "method": "POST", "url": "/v1/chat/completions"}
        lines.append(json.dumps({**line, "body": body}))
    content = ("\n".join(lines) + "\n").encode()
    r = await client.post(
        "/v1/files", files={"file": (f"b{k}.jsonl", content)}, data={"purpose": "batch"}
    )
    if r.status_code != 200:
        return f"batch {_refused(r)}: upload {r.status_code} {_code(r)}"
    made = {"input_file_id": r.json()["id"], "endpoint": "/v1/chat/completions"}
    r = await client.post("/v1/batches", json={**made, "completion_window": "24h"})
    if r.status_code != 200:
        return f"batch {_refused(r)}: create {r.status_code} {_code(r)}"
    batch_id = r.json()["id"]
    for _ in range(1200):  # bounded: 2 minutes
        await asyncio.sleep(0.1)
        r = await client.get(f"/v1/batches/{batch_id}")
        if _refused(r) == "refused":
            continue
        batch = r.json()
        if batch.get("status") not in ("validating", "in_progress", "finalizing"):
            break
    else:
        return "batch wrong: not done in 2 minutes"
    if batch.get("status") != "completed" or batch.get("error_file_id"):
        return f"batch wrong: {batch.get('status')} {batch.get('request_counts')}"
    for _ in range(100):  # bounded: 10 s
        r = await client.get(f"/v1/files/{batch['output_file_id']}/content")
        if _refused(r) != "refused":
            break
        await asyncio.sleep(0.1)
    answers = [json.loads(line) for line in r.text.splitlines()]
    ids = sorted(a["custom_id"] for a in answers)
    if ids != sorted(f"b{k}-{n}" for n in range(BATCH_LINES)):
        return f"batch wrong: {len(ids)} answers"
    if any(a["response"]["status_code"] != 200 for a in answers):
        return "batch wrong: an answer was not a 200"
    done.add(k)
    return "batch ok"


def _refused(r: httpx.Response) -> str:
    """``refused`` for the 503 ``store_unavailable`` of a store that did not answer (as
    documented when its Redis cannot be used), else ``wrong``."""
    return "refused" if r.status_code == 503 and _code(r) == "store_unavailable" else "wrong"


async def _one(client: httpx.AsyncClient, rng: random.Random, i: int, ledger: Ledger) -> str:
    """One request of a random kind; what became of it (in `ledger` too, with how a
    client that gave up timed out: before its request was written whole, or after)."""
    try:
        outcome = await _one_sent(client, rng, i, ledger)
    except httpx.TimeoutException as exc:
        ledger.saw(f"q{i}", f"{GAVE_UP} ({type(exc).__name__})")
        return GAVE_UP
    ledger.saw(f"q{i}", outcome)
    return outcome


async def _one_sent(client: httpx.AsyncClient, rng: random.Random, i: int, ledger: Ledger) -> str:
    kind = rng.random()
    body: dict[str, Any] = {
        "model": rng.choice(["auto", "slow", "r"]),
        "messages": [{"role": "user", "content": f"{WORDS} {i if i % 5 else 0}"}],
    }
    if kind < 0.6:
        body["stream"] = True
        cut = kind < 0.4  # most streams are cut after a few events
        headers = ledger.send(f"q{i}", f"chat stream{' to cut' if cut else ''}")
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            seen = 0
            async for _ in r.aiter_lines():
                seen += 1
                if cut and seen > rng.randint(1, 10):
                    return "stream cut"
            return f"stream {r.status_code}"
    timeout = rng.uniform(0.002, 0.2) if kind < 0.8 else 20.0
    headers = ledger.send(f"q{i}", f"chat, client timeout {timeout:.3f} s")
    r = await client.post("/v1/chat/completions", json=body, timeout=timeout, headers=headers)
    return str(r.status_code)


async def _load(
    url: str,
    args: argparse.Namespace,
    reload: Any,
    ledger: Ledger,
    done: set[int],
    proxy: StallProxy | None,
) -> Counter[str]:
    rng = random.Random(args.seed)
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as client:
        gate = asyncio.Semaphore(args.concurrency)

        async def guarded(i: int) -> str:
            async with gate:
                if args.upstream_faults and i % 4 == 3:
                    return await _faulty(client, rng, i, ledger)
                if args.responses and i % 4 == 1:
                    return await _conversation(client, i, ledger)
                return await _one(client, rng, i, ledger)

        tasks = [asyncio.create_task(guarded(i)) for i in range(args.requests)]
        if args.batches:
            faults = args.upstream_faults
            tasks += [asyncio.create_task(_batch(client, k, faults, done)) for k in range(BATCHES)]
        if proxy is not None:
            tasks.append(asyncio.create_task(_flap(proxy)))
        for gen in range(1, 7):  # reloads while the load runs
            await asyncio.sleep(0.7)
            reload(gen)
        return Counter(await asyncio.gather(*tasks))


async def _flap(proxy: StallProxy) -> str:
    """Redis, behind `proxy`, hangs (nothing passed on, either way) for 1.5 s, answers
    for 1 s, goes away (every connection reset, new ones too) for 1.5 s, and answers
    again, while the load runs."""
    await asyncio.sleep(0.8)
    proxy.stall()
    await asyncio.sleep(1.5)
    proxy.resume()
    await asyncio.sleep(1.0)
    proxy.refuse()
    await asyncio.sleep(1.5)
    proxy.resume()
    return f"redis hung 1.5 s, went away 1.5 s ({proxy.refused} connections reset as taken)"


async def _burst(url: str, ledger: Ledger) -> list[str]:
    """CAP + 1 streams held open at once: which model served each."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        hold = asyncio.Event()

        async def one(n: int) -> str:
            body = {
                "model": "r",
                "stream": True,
                "messages": [{"role": "user", "content": f"{WORDS} burst {n}"}],
            }
            headers = ledger.send(f"burst{n}", "chat stream held open")
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=headers
            ) as r:
                model = r.headers.get("x-llmroute-model", "?")
                async for _ in r.aiter_lines():
                    await hold.wait()
            ledger.saw(f"burst{n}", f"stream {r.status_code} {model}")
            return model

        tasks = [asyncio.create_task(one(n)) for n in range(CAP + 1)]
        await asyncio.sleep(1.0)
        hold.set()
        return sorted(await asyncio.gather(*tasks))


@contextmanager
def _gateway_redis(args: argparse.Namespace) -> Iterator[tuple[str, StallProxy | None]]:
    """The Redis URL the gateway's registry names, and the proxy it goes through
    (``--redis-trouble flap``): `args.limits`; with ``closed``, a port nothing listens
    on; with ``db``, `args.limits`'s Redis at a db past its ``databases``; with
    ``flap``, a proxy in front of `args.limits` that `_flap` makes hang and go away."""
    if args.redis_trouble == "closed":
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
        yield f"redis://127.0.0.1:{port}/0", None  # closed as soon as it was found free
    elif args.redis_trouble == "db":
        import redis

        with redis.Redis.from_url(args.limits) as admin:
            count = int(admin.config_get("databases")["databases"])
        yield with_db(args.limits, max(99, count)), None
    elif args.redis_trouble == "flap":
        with stall_proxy(args.limits) as (proxy, url):
            yield url, proxy
    else:
        yield args.limits, None


async def _recovered(
    url: str, args: argparse.Namespace, ledger: Ledger, done: set[int]
) -> dict[str, Any] | None:
    """With ``--redis-trouble``, once the load has ended: a whole request sent twice (the
    second a response-cache hit where Redis answers, two misses where it cannot be
    used), a conversation by id and one by the Conversations API, and a batch: what
    became of each, and ``llmroute_state_errors_total`` before and after them (with
    ``flap`` Redis answers again by now: every feature must use it, without a restart,
    and count no failure). None without ``--redis-trouble``."""
    if not args.redis_trouble:
        return None
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        await asyncio.sleep(1.5)  # past the second each feature leaves a failed Redis alone
        errors = _labelled((await client.get("/metrics")).text, "state_errors_total", "feature")
        body = {"model": "spill", "messages": [{"role": "user", "content": f"{WORDS} recovered"}]}
        cache: list[str | None] = []
        for n in range(2):
            headers = ledger.send(f"again{n}", "chat, after the load")
            r = await client.post("/v1/chat/completions", json=body, headers=headers)
            ledger.saw(f"again{n}", str(r.status_code))
            cache.append(f"{r.status_code} {r.headers.get('x-llmroute-cache')}")
        first = args.requests + (5 - args.requests) % 8  # the Conversations API's
        talks = [await _conversation(client, i, ledger) for i in (first, first + 4)]
        batch = await _batch(client, BATCHES, False, done)
        later = _labelled((await client.get("/metrics")).text, "state_errors_total", "feature")
    return {
        "cache": cache,
        "conversations": talks,
        "batch": batch,
        "state_errors_before_and_after": (errors, later),
    }


def _labelled(metrics: str, name: str, label: str) -> dict[str, float]:
    """``llmroute_NAME`` by its `label`'s values, summed over its other labels."""
    found: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith(f"llmroute_{name}{{") and f'{label}="' in line:
            value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            found[value] = found.get(value, 0.0) + float(line.split()[-1])
    return found


def _redis_kinds(url: str, namespace: str) -> dict[str, int] | None:
    """The run's keys in Redis by the feature their name says (``inflight``, ``resp``,
    ``response``, ``batches``, ``affinity``...)."""
    if not url.startswith("redis"):
        return None
    import redis

    client = redis.Redis.from_url(url)
    try:
        kinds = Counter(
            k.decode(errors="replace").split(":")[1]
            for k in client.scan_iter(match=f"{namespace}:*", count=1000)
        )
        return dict(sorted(kinds.items()))
    finally:
        client.close()


def _redis_slots(url: str, namespace: str) -> int | None:
    if not url.startswith("redis"):
        return None
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = client.keys(f"{namespace}:inflight:*")
        return sum(int(client.zcard(k)) for k in keys)
    finally:
        client.close()


def _redis_holds(url: str, namespace: str) -> tuple[int, float] | None:
    """Hard-budget holds still counted in Redis (none once every call has settled), and
    what the slow model's budget has counted spent."""
    if not url.startswith("redis"):
        return None
    import redis

    client = redis.Redis.from_url(url)
    try:
        holds = sum(int(client.hlen(k)) for k in client.keys(f"{namespace}:usd:*:holds"))
        # beside each sum: its holds (a hash) and their leases and settled ids (a zset)
        sums = [
            k
            for k in client.keys(f"{namespace}:usd:budget:slow:*")
            if not k.endswith((b":holds", b":lapses"))
        ]
        return holds, sum(float(client.get(k) or 0) for k in sums)
    finally:
        client.close()


def _redis_kept(url: str, namespace: str) -> tuple[int, int, bool] | None:
    """The responses Redis keeps for requests without a client key (owner ``""``): how
    many are listed for ``max_key_responses``, how many records there are, and whether
    every record is listed and the listing's byte count is the sum of its sizes (the
    script that keeps a record and evicts past the bound ran whole, on every worker)."""
    if not url.startswith("redis"):
        return None
    import redis

    from llmroute.state.stored_responses import StoredResponse
    from llmroute.state.stores import owned_key, owner_prefix

    prefix = f"{namespace}:response:"
    listing = owned_key(prefix, "", "listing\0")
    client: Any = redis.Redis.from_url(url)  # answers bytes: untyped here
    try:
        listed: set[bytes] = set(client.zrange(listing, 0, -1))
        records: set[bytes] = set()
        for key in client.scan_iter(match=f"{owner_prefix(prefix, '')}*", count=1000):
            raw = client.get(key) if client.type(key) == b"string" else None
            if raw is not None and StoredResponse.from_bytes(raw) is not None:
                records.add(key)
        sizes: dict[bytes, int] = {k: int(v) for k, v in client.hgetall(f"{listing}:sizes").items()}
        total = sizes.pop(b"", 0)
        whole = records <= listed and set(sizes) == listed and total == sum(sizes.values())
        return len(listed), len(records), whole
    finally:
        client.close()


def _forget_keys(url: str, namespace: str) -> int | None:
    """Every key of this run (all under its own namespace), deleted: each run left
    hundreds (limits, kept responses, conversations, batches, affinity) in a Redis
    others use. How many there were."""
    if not url.startswith("redis"):
        return None
    import redis

    client = redis.Redis.from_url(url)
    try:
        gone = 0
        for _ in range(10_000):  # bounded: a run's keys are thousands at most
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if not keys:
                break
            gone += int(client.unlink(*keys))
        return gone
    finally:
        client.close()


TROUBLE_CYCLES = {"flap": ("refuse", 1.5, 1.5), "hang": ("stall", 3.0, 1.5)}
PROBE_REQUESTS = 40
# a probe's p50 while PostgreSQL is in trouble, at most this many times its p50 before
# (plus `PROBE_SLACK_S`: two cores shared with the load's leftovers)
PROBE_FACTOR, PROBE_SLACK_S = 3.0, 0.05
RECOVERY_BOUND_S = 30.0  # past the writer's longest backoff (10 s) and a pool's reconnect
SHUTDOWN_BOUND_S = 10.0  # KILL_MARGIN_S: nothing in flight, the graceful timeout ends at once


class _Log:
    """The gateway's decision log: the URL `llmroute serve` is given, a reader of its
    ``decisions`` table, the proxy in front of PostgreSQL (``--telemetry-trouble``) and
    the password the URL carries (which serve.log must not show)."""

    def __init__(self, url: str, read: Any, proxy: StallProxy | None, secret: str | None) -> None:
        self.url = url
        self.read = read  # (sql with {tags} for the tags column as text) -> rows
        self.proxy = proxy
        self.secret = secret
        self.where = "sqlite" if url.startswith("sqlite") else "postgres"


@contextmanager
def _decision_log(args: argparse.Namespace, folder: Path) -> Iterator[_Log]:
    """SQLite in `folder` (the default), or, with ``--telemetry postgresql://...``, a
    schema of its own (``chaos_…``, dropped after unless ``--keep``) in that database,
    reached through a `StallProxy` with ``--telemetry-trouble``; the URL is given a
    password when it has none (trust auth ignores it)."""
    if not args.telemetry:
        db = folder / "log.db"

        def read_sqlite(sql: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(db) as conn:
                return conn.execute(sql.format(tags="tags")).fetchall()

        yield _Log(f"sqlite:///{db}", read_sqlite, None, None)
        return
    import psycopg

    schema = f"chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.telemetry, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE SCHEMA {schema}".encode())

    def read_postgres(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(args.telemetry, connect_timeout=5) as conn:
            conn.execute(f"SET search_path TO {schema}".encode())
            return conn.execute(sql.format(tags="tags::text").encode()).fetchall()

    parts = urlsplit(args.telemetry)
    secret = parts.password or f"chaos-pw-{uuid.uuid4().hex[:10]}"
    user = quote(parts.username or "postgres", safe="")
    query = f"{parts.query}&" if parts.query else ""
    query += f"options=-csearch_path%3D{schema}&application_name={schema}"
    try:
        if args.telemetry_trouble:
            target = (parts.hostname or "127.0.0.1", parts.port or 5432)
            with closing(StallProxy(target)) as proxy:
                netloc = f"{user}:{quote(secret, safe='')}@127.0.0.1:{proxy.port}"
                url = urlunsplit(parts._replace(netloc=netloc, query=query))
                yield _Log(url, read_postgres, proxy, secret)
        else:
            host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
            netloc = f"{user}:{quote(secret, safe='')}@{host}"
            url = urlunsplit(parts._replace(netloc=netloc, query=query))
            yield _Log(url, read_postgres, None, secret)
    finally:
        if args.keep is None:
            with psycopg.connect(args.telemetry, autocommit=True, connect_timeout=5) as admin:
                admin.execute(b"SET lock_timeout = '10s'")
                admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())
        else:
            print(f"the decision log is kept in PostgreSQL schema {schema}", file=sys.stderr)


class _Trouble:
    """``--telemetry-trouble`` played on the proxy in front of PostgreSQL, on a thread of
    its own, from `start` to `stop`: ``closed``, nothing listens (every connection
    reset, a new one refused); ``flap``, every connection reset for 1.5 s, then let
    through 1.5 s, and again; ``hang``, connections taken and nothing passed on either
    way for 3 s, then let through 1.5 s, and again. `hold` puts it back for good (the
    gateway's shutdown)."""

    def __init__(self, proxy: StallProxy, kind: str) -> None:
        self.proxy, self.kind = proxy, kind
        self.cycles = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="telemetry-trouble", daemon=True)

    @classmethod
    def of(cls, proxy: StallProxy | None, kind: str | None) -> _Trouble | None:
        return None if proxy is None or kind is None else cls(proxy, kind)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.proxy.listen()  # listening again, every connection let through

    def hold(self) -> None:
        if self.kind == "closed":
            self.proxy.unlisten()
        else:
            getattr(self.proxy, TROUBLE_CYCLES[self.kind][0])()

    def _play(self) -> None:
        if self.kind == "closed":
            self.proxy.unlisten()
            return
        bad, bad_s, good_s = TROUBLE_CYCLES[self.kind]
        while not self._stop.is_set():
            self.cycles += 1
            getattr(self.proxy, bad)()
            if self._stop.wait(bad_s):
                break
            self.proxy.resume()
            self._stop.wait(good_s)


async def _probe(url: str, ledger: Ledger, name: str) -> list[float]:
    """`PROBE_REQUESTS` whole requests to the echo model, four at a time, each tagged
    ``chaos=NAMEn``: their latencies, sorted (what a client waits, whatever its
    decision log is doing)."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        gate = asyncio.Semaphore(4)

        async def one(n: int) -> None:
            body = {"model": "spill", "messages": [{"role": "user", "content": f"{name} {n}"}]}
            rid = f"{name}{n}"
            async with gate:
                headers = ledger.send(rid, f"chat, probe {name}")
                r = await client.post("/v1/chat/completions", json=body, headers=headers)
                ledger.saw(rid, str(r.status_code))

        await asyncio.gather(*(one(n) for n in range(PROBE_REQUESTS)))
    return sorted(ledger.seconds[f"{name}{n}"] for n in range(PROBE_REQUESTS))


def _median(values: list[float]) -> float | None:
    return round(values[len(values) // 2], 4) if values else None


def _tagged(log: _Log, prefix: str) -> int:
    """Rows of the decision log whose chaos tag starts with `prefix`."""
    return len(log.read(f"SELECT {{tags}} FROM decisions WHERE {{tags}} LIKE '%chaos={prefix}%'"))


def _log_recovery(url: str, ledger: Ledger, log: _Log) -> dict[str, Any]:
    """Once the trouble has ended: a whole request every half second (``chaos=afterN``)
    until one of them is in the table (bounded: `RECOVERY_BOUND_S`), then ten more
    (``chaos=fineN``): how long the log took to write again and how many of the ten
    it wrote."""
    began = time.perf_counter()
    seconds: float | None = None
    n = 0
    with httpx.Client(base_url=url, timeout=20) as client:
        while time.perf_counter() - began < RECOVERY_BOUND_S:
            body = {"model": "spill", "messages": [{"role": "user", "content": f"after {n}"}]}
            headers = ledger.send(f"after{n}", "chat, after the trouble")
            r = client.post("/v1/chat/completions", json=body, headers=headers)
            ledger.saw(f"after{n}", str(r.status_code))
            n += 1
            time.sleep(0.5)
            if _tagged(log, "after"):
                seconds = time.perf_counter() - began
                break
        for k in range(10):
            body = {"model": "spill", "messages": [{"role": "user", "content": f"fine {k}"}]}
            headers = ledger.send(f"fine{k}", "chat, once the log wrote again")
            r = client.post("/v1/chat/completions", json=body, headers=headers)
            ledger.saw(f"fine{k}", str(r.status_code))
    time.sleep(1.5)  # past the writer's flush
    return {
        "written_again_after_s": None if seconds is None else round(seconds, 1),
        "sent_until_then": n,
        "written_of_ten_after": _tagged(log, "fine"),
    }


def _written_out(url: str) -> str:
    """The gateway's metrics once its writer's queue is empty (bounded: 15 s)."""
    for _ in range(30):
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        depth = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("llmroute_telemetry_queue_depth ")
        ]
        if not depth or depth[0] == 0:
            time.sleep(0.5)  # a batch in hand, said after it ends
            return httpx.get(f"{url}/metrics", timeout=10).text
        time.sleep(0.5)
    return metrics


def _shutdown_sends(url: str, ledger: Ledger) -> list[str]:
    """Five whole requests (``chaos=downN``) as the gateway is about to be stopped, its
    PostgreSQL in trouble again: records its writer holds as it closes."""
    seen = []
    with httpx.Client(base_url=url, timeout=20) as client:
        for n in range(5):
            body = {"model": "spill", "messages": [{"role": "user", "content": f"down {n}"}]}
            headers = ledger.send(f"down{n}", "chat, as the gateway stops")
            r = client.post("/v1/chat/completions", json=body, headers=headers)
            ledger.saw(f"down{n}", str(r.status_code))
            seen.append(str(r.status_code))
    return seen


def _trouble_begins(
    trouble: _Trouble | None, url: str, ledger: Ledger, pg: dict[str, Any], log: _Log
) -> None:
    """With ``--telemetry-trouble``: the probe before it, written (the log's migration
    done: one cut midway drops what comes in the writer's backoff), then the trouble
    begun."""
    if trouble is not None:
        pg["probe_p50_s_before"] = _median(asyncio.run(_probe(url, ledger, "pre")))
        for _ in range(100):  # bounded: 20 s
            try:
                written = _tagged(log, "pre")
            except Exception as exc:  # the writer has not made the table yet
                if "does not exist" not in str(exc):
                    raise
                written = 0
            if written >= PROBE_REQUESTS:
                break
            time.sleep(0.2)
        trouble.start()


def _trouble_ends(
    trouble: _Trouble | None, url: str, ledger: Ledger, pg: dict[str, Any], log: _Log
) -> None:
    """With ``--telemetry-trouble``, the load over: the probe again, still in trouble;
    then the trouble ended, and how the log recovered."""
    if trouble is not None:
        pg["probe_p50_s_in_trouble"] = _median(asyncio.run(_probe(url, ledger, "mid")))
        trouble.stop()
        pg["trouble_cycles"] = trouble.cycles
        pg["proxy_connections_reset_as_taken"] = trouble.proxy.refused
        pg["recovery"] = _log_recovery(url, ledger, log)


def _trouble_again(trouble: _Trouble | None, url: str, ledger: Ledger, pg: dict[str, Any]) -> None:
    """With ``--telemetry-trouble``: PostgreSQL in trouble again, for good, and records
    sent for the writer to hold as the gateway stops."""
    if trouble is not None:
        trouble.hold()
        pg["sent_as_it_stops"] = _shutdown_sends(url, ledger)


def _stopped(proc: subprocess.Popen[bytes]) -> float:
    """`proc` stopped by SIGTERM (waited for 30 s at most): in how many seconds."""
    stopping = time.perf_counter()
    proc.terminate()
    try:
        proc.wait(30)
    finally:
        seconds = time.perf_counter() - stopping
    return round(seconds, 2)


def _kept(keep: Path | None, db: Path | None, log_path: Path) -> Path:
    """The folder (`keep`, else a new ``chaos-kept-…``) holding a copy of the gateway's
    log, and of the SQLite decision log `db` (None: the log is in PostgreSQL)."""
    keep = keep or Path(tempfile.mkdtemp(prefix="chaos-kept-"))
    keep.mkdir(parents=True, exist_ok=True)
    if db is not None:
        shutil.copy(db, keep / "log.db")
    shutil.copy(log_path, keep / "serve.log")
    return keep


def _read_log(
    log: _Log,
) -> tuple[dict[str, int], int, dict[str, list[tuple[str, ...]]], dict[str, list[tuple[str, ...]]]]:
    """The decision log's rows by status and error, how many are a batch's, and the
    rows by chaos tag, apart from a batch's (tagged batch=ID: one that a worker had in
    flight when it was stopped may be logged twice) and a batch's."""
    not_batch = "WHERE coalesce({tags}, '') NOT LIKE '%batch=%'"
    is_batch = "WHERE coalesce({tags}, '') LIKE '%batch=%'"
    logged = log.read(f"SELECT status, error, count(*) FROM decisions {not_batch} GROUP BY 1, 2")
    log_rows = {f"{s} {e or ''}".strip(): n for s, e, n in logged}
    batch_rows = log.read(f"SELECT count(*) FROM decisions {is_batch}")[0][0]
    rows = log.read(f"SELECT {{tags}}, id, status, error FROM decisions {not_batch}")
    batch = log.read(f"SELECT {{tags}}, id, status, error FROM decisions {is_batch}")
    return log_rows, batch_rows, _records_by_id(rows), _records_by_id(batch)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """`_run` under a namespace of its own, whose Redis keys are deleted after (however
    it ended) unless ``--keep``."""
    namespace = f"chaos-{uuid.uuid4().hex[:8]}"
    if args.keep is not None:
        return {**_run(args, namespace), "redis_namespace_kept": namespace}
    try:
        result = _run(args, namespace)
    finally:
        deleted = _forget_keys(args.limits, namespace)
    return {**result, "redis_keys_deleted": deleted}


def _run(args: argparse.Namespace, namespace: str) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_upstream() as upstream,
        _gateway_redis(args) as (redis_url, proxy),
        _decision_log(args, Path(tmp)) as decision_log,
    ):
        folder = Path(tmp)
        db, registry, log_path = folder / "log.db", folder / "registry.yaml", folder / "serve.log"
        registry.write_text(_registry(upstream.url, db, args, namespace, 0, redis_url))
        port = args.port or 18000 + random.Random().randrange(2000)
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "LLMROUTE_TELEMETRY_URL": decision_log.url}
        command = [str(BIN / "llmroute"), "serve", "--registry", str(registry)]
        command += ["--port", str(port), "--reload-interval", "0.5", "--workers", str(args.workers)]
        trouble = _Trouble.of(decision_log.proxy, args.telemetry_trouble)
        pg: dict[str, Any] = {}
        launched = time.perf_counter()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            for _ in range(240):
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                raise SystemExit(f"the gateway did not start:\n{log_path.read_text()}")

            def reload(gen: int) -> None:
                if gen % 2 == 0:  # the first reload rewrites: batches run across it
                    proc.send_signal(signal.SIGHUP)
                    return
                text = _registry(upstream.url, db, args, namespace, gen, redis_url)
                partial = registry.with_suffix(".tmp")
                partial.write_text(text)
                partial.replace(registry)

            ledger, done = Ledger(), set[int]()
            _trouble_begins(trouble, url, ledger, pg, decision_log)
            started = time.perf_counter()
            outcomes = asyncio.run(_load(url, args, reload, ledger, done, proxy))
            seconds = time.perf_counter() - started
            _trouble_ends(trouble, url, ledger, pg, decision_log)
            time.sleep(3)  # the decision log's writer and any give-back finish
            recovered = asyncio.run(_recovered(url, args, ledger, done))
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            burst = asyncio.run(_burst(url, ledger))
            kept = _redis_kept(args.limits, namespace) if args.key_bound else None
            # every record offered so far written or counted dropped
            final_metrics = _written_out(url)
            _trouble_again(trouble, url, ledger, pg)
        finally:
            pg["shutdown_s"] = _stopped(proc)
            alive_s = time.perf_counter() - launched
        time.sleep(0.5)
        in_flight = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("llmroute_requests_in_flight ")
        ]
        # a batch's requests are counted apart (tagged batch=ID): one that a worker had
        # in flight when it was stopped may be logged twice
        log_rows, batch_rows, records, batch_records = _read_log(decision_log)
        server_log = log_path.read_text(errors="replace")
        # the decision log and the gateway's, for a post-mortem: kept where --keep says,
        # else until the checks have passed (a failed run's are kept)
        keep = _kept(args.keep, db if decision_log.where == "sqlite" else None, log_path)
        (keep / "metrics.txt").write_text(final_metrics)
    sent = len(ledger.sent)  # a conversation refused a turn sends no more
    statuses = {k: v for k, v in outcomes.items()}
    not_written = [rid for rid in ledger.sent if rid not in records]
    batch_lines = [f"b{k}-{n}" for k in sorted(done) for n in range(BATCH_LINES)]
    bad_5xx = sum(v for k, v in log_rows.items() if k.startswith("5") and k != "503 upstream_error")
    result: dict[str, Any] = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "limits": args.limits,
        "workers": args.workers,
        "seconds": round(seconds, 1),
        "client_outcomes": statuses,
        "decision_log": log_rows,
        "logged_of_sent": f"{sum(log_rows.values())} of {sent}",
        # each by its chaos=ID tag: what was sent and what its client saw
        "sent_not_logged": {
            rid: " / ".join(ledger.sent[rid]) for rid in ledger.sent if rid not in records
        },
        "logged_more_than_once": {
            rid: [" ".join(r) for r in rows] for rid, rows in records.items() if len(rows) > 1
        },
        "logged_not_sent": {
            rid: [" ".join(r) for r in rows]
            for rid, rows in records.items()
            if rid not in ledger.sent
        },
        "logs_kept_in": str(keep),
        # how the clients that gave up timed out (before their request was written
        # whole, or after), and the requests answered 499 before any decision
        "gave_up_by": dict(Counter(o for _, o in ledger.sent.values() if o.startswith(GAVE_UP))),
        "api_errors_499": _api_errors(metrics, "499"),
        "api_errors_503": _api_errors(metrics, "503"),
        "in_flight_after": in_flight[0] if in_flight else None,
        "redis_slots_left": _redis_slots(args.limits, namespace),
        "redis_budget_holds_left_and_spent": _redis_holds(args.limits, namespace),
        "burst_models": burst,
        "batch_requests_logged": batch_rows,
        # by their chaos=ID tags: none may be missing (one a worker had in flight as it
        # stopped, or re-sent, may be logged twice)
        "batch_lines_not_logged": sorted(set(batch_lines) - set(batch_records)),
        "batch_lines_logged_twice_or_more": sum(1 for r in batch_records.values() if len(r) > 1),
        "redis_responses_listed_kept_whole": kept,
        # a batch running on a registry that a reload replaced goes on under the new one
        "batch_runs_moved_by_reloads": server_log.count("goes on under registry version"),
        "tracebacks": server_log.count("Traceback"),
        # Redis calls that failed (limits let requests through uncounted meanwhile: a
        # slot check failing then is Redis's failure, not a slot leaked) and the lines
        # that said so
        "state_errors": _labelled(metrics, "state_errors_total", "feature"),
        "limits_unavailable_lines": server_log.count("limits unavailable"),
        "slowest_answer_s": ledger.slowest(),
    }
    result.update(_trouble_result(args, namespace, server_log, metrics, alive_s, recovered))
    telemetry = _telemetry_result(args, ledger, records, batch_records, batch_lines, pg)
    result.update(
        telemetry, telemetry_dropped=_labelled(final_metrics, "telemetry_dropped_total", "reason")
    )
    unusable = args.redis_trouble in ("closed", "db")
    checks = {
        "nothing in flight": result["in_flight_after"] == 0.0,
        # a Redis that cannot be used lets every request through: the burst is all slow
        "every slot free": burst
        == sorted(["slow"] * (CAP + 1) if unusable else ["slow"] * CAP + ["spill"])
        and result["redis_slots_left"] in (None, 0),
        # with the log in trouble, `_telemetry_checks` accounts for those not logged
        "every request logged": bool(args.telemetry_trouble)
        or (sum(log_rows.values()) + len(not_written) == sent and _all_logged(ledger, records)),
        "no 5xx but a pinned model at its cap": bad_5xx == 0,
        "no traceback": result["tracebacks"] == 0,
        "every hard-budget hold settled": result["redis_budget_holds_left_and_spent"] is None
        or result["redis_budget_holds_left_and_spent"][0] == 0,
    }
    if args.upstream_faults:
        faults = {k: v for k, v in outcomes.items() if k.startswith("fault ")}
        checks["misbehaving upstreams fell back or broke the stream"] = bool(faults) and all(
            k.endswith(" ok") for k in faults
        )
    if args.responses:
        talks = {k: v for k, v in outcomes.items() if k.startswith("conversation ")}
        checks["every conversation was kept and continued whole"] = bool(talks) and all(
            k == "conversation ok" or (args.redis_trouble and _as_documented(k)) for k in talks
        )
    if args.key_bound and kept is not None:
        checks["every worker kept the responses within max_key_responses"] = (
            kept[0] <= args.key_bound and kept[1] <= args.key_bound and kept[2]
        )
    if args.batches:
        made = {k: v for k, v in outcomes.items() if k.startswith("batch ")}
        checks["every batch completed with one 200 answer per request"] = made == {
            "batch ok": BATCHES
        } or (bool(args.redis_trouble) and all(_as_documented(k) for k in made))
        # with the log in trouble, `_telemetry_checks` accounts for those not logged
        checks["every batch request logged"] = bool(args.telemetry_trouble) or (
            batch_rows >= len(done) * BATCH_LINES and set(batch_records) == set(batch_lines)
        )
    if args.redis_trouble:
        checks.update(_trouble_checks(args, result))
    checks.update(_telemetry_checks(result, server_log, final_metrics, decision_log.secret))
    result["checks"] = checks
    if args.keep is None and all(checks.values()):
        shutil.rmtree(keep)
        result["logs_kept_in"] = None
    return result


def _trouble_result(
    args: argparse.Namespace,
    namespace: str,
    server_log: str,
    metrics: str,
    alive_s: float,
    recovered: dict[str, Any] | None,
) -> dict[str, Any]:
    """What ``--redis-trouble`` adds to the result: the gateway's Redis checks as its log
    said them, each feature's failures as its metrics count them, what became of the
    requests sent after the load (`_recovered`) and the run's keys in Redis (nothing
    without it)."""
    if not args.redis_trouble:
        return {}
    said = re.findall(r"redis (\S+) \(([^)]*)\)(: answered in| cannot be used: [^;]*)", server_log)
    return {
        "redis_trouble": args.redis_trouble,
        "gateway_redis": said[0][0] if said else None,
        "gateway_seconds": round(alive_s, 1),
        "registry_swaps": server_log.count("registry reloaded ("),
        # one line per URL at each worker's start and at each swap
        "redis_check_lines": dict(Counter(s[2].lstrip(": ") for s in said)),
        "cache_errors": _labelled(metrics, "cache_total", "result").get("error", 0.0),
        "cache_results": _labelled(metrics, "cache_total", "result"),
        "stored_responses": _labelled(metrics, "stored_responses_total", "outcome"),
        "conversations_metric": _labelled(metrics, "conversations_total", "outcome"),
        "failure_lines": {
            k: server_log.count(k)
            for k in (
                "store did not answer",
                "response cache unavailable",
                "shared breakers unavailable",
                "affinity: redis",
            )
        },
        "recovered": recovered,
        "redis_keys": _redis_kinds(args.limits, namespace),
    }


def _telemetry_result(
    args: argparse.Namespace,
    ledger: Ledger,
    records: dict[str, list[tuple[str, ...]]],
    batch_records: dict[str, list[tuple[str, ...]]],
    batch_lines: list[str],
    pg: dict[str, Any],
) -> dict[str, Any]:
    """What ``--telemetry-trouble`` adds to the result: the requests (and batch lines)
    whose record is not in the table, those of them whose client gave up before the
    gateway may have had the request, the probes' p50s, the log's recovery, the
    shutdown's time; and the 5xx the clients saw (the table cannot say: it misses
    rows)."""
    if not args.telemetry_trouble:
        return {}
    counted = [rid for rid in ledger.sent if not rid.startswith("down")]
    missing = [rid for rid in counted if rid not in records]
    missing += [line for line in batch_lines if line not in batch_records]
    maybe = [rid for rid in missing if rid in ledger.sent and _maybe_unlogged(ledger.sent[rid][1])]
    client_5xx = Counter(
        o
        for _, o in ledger.sent.values()
        if re.match(r"(stream )?5\d\d", o) and not re.match(r"(stream )?503$", o)
    )
    return {
        "telemetry": args.telemetry_trouble,
        **pg,
        "records_not_in_table": len(missing),
        "of_which_client_gave_up_before_sent_whole": len(maybe),
        "records_in_table_twice": sum(1 for r in records.values() if len(r) > 1),
        "client_5xx_not_a_cap": dict(client_5xx),
    }


def _telemetry_checks(
    result: dict[str, Any], server_log: str, metrics: str, secret: str | None
) -> dict[str, bool]:
    """With ``--telemetry-trouble``: clients answered as without it (no 5xx but a
    pinned model's 503, a probe's p50 within `PROBE_FACTOR` of the one before), every
    record not in the table counted in ``llmroute_telemetry_dropped_total``, the log
    writing again once PostgreSQL answers, the gateway stopped within its bound with
    PostgreSQL in trouble, and the URL's password nowhere in its log or metrics."""
    if "telemetry" not in result or secret is None:
        return {}
    dropped = sum(result["telemetry_dropped"].values())
    missing = result["records_not_in_table"]
    maybe = result["of_which_client_gave_up_before_sent_whole"]
    before, during = result["probe_p50_s_before"], result["probe_p50_s_in_trouble"]
    recovery = result["recovery"]
    return {
        "no 5xx the log's trouble caused": not result["client_5xx_not_a_cap"],
        "answered as fast as before the trouble (probe p50)": before is not None
        and during is not None
        and during <= PROBE_FACTOR * before + PROBE_SLACK_S,
        "every record not in the table counted dropped": missing - maybe <= dropped <= missing
        and result["records_in_table_twice"] == 0,
        "the log writes again once PostgreSQL answers": recovery["written_again_after_s"]
        is not None
        and recovery["written_of_ten_after"] == 10,
        "the gateway stopped within its bound, PostgreSQL in trouble": result["shutdown_s"]
        <= SHUTDOWN_BOUND_S,
        "no password in serve.log or the metrics": secret not in server_log
        and secret not in metrics,
    }


def _as_documented(outcome: str) -> bool:
    """Whether a conversation's or a batch's `outcome` is what the docs promise of a
    Redis that cannot be used: a response answered ``store: false``, a continuation, a
    conversation or a batch refused 503 ``store_unavailable``, a resumed background
    stream ended by an ``error`` event ``store_unavailable`` (its follower tried for a
    few seconds; the message names where to resume from)."""
    return outcome.startswith(("conversation not kept", "batch refused")) or (
        "wrong" in outcome and "store_unavailable" in outcome
    )


def _trouble_checks(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, bool]:
    """With ``--redis-trouble``: the start's and each swap's Redis check said once per
    worker, as the trouble is; each feature's failures counted about once a second per
    process, not per request; with ``closed`` or ``db`` nothing written to Redis and
    every feature's fallback taken after the load; with ``flap`` every feature using
    Redis again, without a restart, and counting no failure."""
    lines = result["redis_check_lines"]
    unusable = args.redis_trouble in ("closed", "db")
    problem = {"closed": "connection refused", "db": "is out of range"}.get(args.redis_trouble)
    said = sum(lines.values()) == args.workers + result["registry_swaps"]
    if problem is not None:
        said = said and all(problem in k for k in lines)
    # one failure a second per feature and process, plus one per registry version a
    # process held (each its own pause) and a second's worth of slack
    bound = (result["gateway_seconds"] + 1) * args.workers + result["registry_swaps"] + 1
    recovered = result["recovered"]
    before, after = recovered["state_errors_before_and_after"]
    checks = {
        "one Redis check line per worker's start and swap, saying what is wrong": said,
        "Redis failures counted about once a second, not per request": all(
            n <= bound for n in result["state_errors"].values()
        ),
    }
    if unusable:
        checks["nothing written to Redis"] = not result["redis_keys"]
        checks["every feature fell back as documented"] = (
            result["state_errors"].get("limits", 0) > 0
            and result["cache_errors"] > 0
            and recovered["cache"] == ["200 miss", "200 miss"]
            and all(_as_documented(t) for t in recovered["conversations"])
            and _as_documented(recovered["batch"])
        )
    else:
        checks["every feature uses Redis again, without a restart"] = (
            recovered["cache"] == ["200 miss", "200 hit"]
            and recovered["conversations"] == ["conversation ok"] * 2
            and recovered["batch"] == "batch ok"
            and before == after
        )
    return checks


def _api_errors(metrics: str, status: str) -> float:
    """``llmroute_api_errors_total`` for `status`, every api: requests answered with it
    before any decision (a 499: the client gone before its body was read)."""
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("llmroute_api_errors_total{") and f'status="{status}"' in line
    )


def _records_by_id(rows: list[tuple[Any, ...]]) -> dict[str, list[tuple[str, ...]]]:
    """The decision-log rows (tags, id, status, error) by the ``chaos=ID`` tag their
    request was sent with (``untagged`` for a row without one)."""
    records: dict[str, list[tuple[str, ...]]] = {}
    for tags, decision, status, error in rows:
        ids = [t[6:] for t in json.loads(tags or "[]") if t.startswith("chaos=")]
        row = (str(decision), str(status), str(error or ""))
        records.setdefault(ids[0] if ids else "untagged", []).append(row)
    return records


def _maybe_unlogged(outcome: str) -> bool:
    """Whether a request whose client saw `outcome` may have no decision-log row: one
    given up before it was written whole, or refused 503 ``store_unavailable`` before
    any decision (a turn continuing a response its store could not read, a background
    response it could not keep: counted in ``llmroute_api_errors_total``)."""
    return outcome in NOT_WRITTEN or outcome.endswith("503 store_unavailable")


def _all_logged(ledger: Ledger, records: dict[str, list[tuple[str, ...]]]) -> bool:
    """Whether every request sent has exactly one record (one whose client gave up before
    it was written whole, at most one), and every record a request."""
    unlogged = (rid for rid in ledger.sent if rid not in records)
    return (
        set(records) <= set(ledger.sent)
        and all(len(r) == 1 for r in records.values())
        and all(_maybe_unlogged(ledger.sent[rid][1]) for rid in unlogged)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--limits", default="memory", help="memory or a redis:// URL")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--port", type=int, default=0, help="the gateway's (else a random one)")
    parser.add_argument(
        "--upstream-faults", action="store_true", help="every fourth request to a bad upstream"
    )
    parser.add_argument(
        "--responses",
        action="store_true",
        help="every fourth request a Responses conversation continued by id",
    )
    parser.add_argument(
        "--batches", action="store_true", help="four batches of chat requests beside the load"
    )
    parser.add_argument(
        "--key-bound",
        type=int,
        default=0,
        help="with --responses: stored_responses.max_key_responses (checked in Redis)",
    )
    parser.add_argument(
        "--redis-trouble",
        choices=["closed", "db", "flap"],
        help="with a redis:// --limits: every Redis feature (the cache and breakers too) "
        "given a closed port, a db past the server's databases, or a proxy to --limits "
        "that hangs 1.5 s and goes away 1.5 s while the load runs",
    )
    parser.add_argument(
        "--telemetry",
        help="the decision log in this PostgreSQL database (postgresql://...), in a schema "
        "of its own dropped after (else SQLite)",
    )
    parser.add_argument(
        "--telemetry-trouble",
        choices=["closed", "flap", "hang"],
        help="with a postgresql:// --telemetry: from after a probe until after the load, "
        "nothing listens where the gateway finds PostgreSQL, or it resets every "
        "connection 1.5 s then lets them through 1.5 s, or it stalls them 3 s then lets "
        "them through 1.5 s; and again as the gateway stops",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--keep",
        type=Path,
        help="copy the decision log and serve.log here, and leave the run's Redis keys "
        "under the namespace it prints (else they are deleted)",
    )
    args = parser.parse_args()
    if args.redis_trouble and not args.limits.startswith("redis"):
        parser.error("--redis-trouble needs a redis:// --limits (the harness reads it)")
    if args.telemetry and not args.telemetry.startswith(("postgresql://", "postgres://")):
        parser.error("--telemetry takes a postgresql:// URL (SQLite is the default)")
    if args.telemetry_trouble and not args.telemetry:
        parser.error("--telemetry-trouble needs a postgresql:// --telemetry")
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            if key != "checks":
                print(f"{key}: {value}")
        for name, ok in result["checks"].items():
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
    sys.exit(0 if all(result["checks"].values()) else 1)


if __name__ == "__main__":
    main()
