"""The event loop's longest wait while a long answer's PII is masked
(`server.chat._for_client`) and while a large upstream request body is written
(`verbatim_json.request_json`).

A ticker beside the work (``asyncio.sleep(0.001)`` for the masking, ``sleep(0)`` for the
writer) records the gaps between its turns: in the loop thread's CPU time (``--clock
thread``, default: its own work, not the time it waits for the CPU or the GIL) or in
wall time (``--clock wall``: the GIL held by a worker thread counts, and so does the
machine's load). Run it against two trees with ``PYTHONPATH`` to compare them:

    PYTHONPATH=src .venv/bin/python benchmarks/bench_loop_steps.py [--runs 5] [--clock wall]

Answers (300 kB each): ``email-only`` (the ``mask-queued`` answer of
`bench_loop_copies.py`, a detector of EMAIL alone), ``prose`` (random English words, an
address and a phone number in the middle, every pattern type), ``dense`` (this
repository's README and docs/safety.md five times over: code, numbers, tables).
Bodies: 1,000 lists of 500 token ids (2.5 MB), 300,000 integers, a 1 MB text among 40
short ones, an 800 kB turn after 30 short ones.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from _common import machine
from starlette.responses import JSONResponse

from llmroute.decision import SafetyOutcome
from llmroute.registry.schema import SafetyProfile
from llmroute.safety.answer_pii import AnswerMask
from llmroute.safety.pii import PII_TYPES, PiiDetector
from llmroute.server import chat
from llmroute.verbatim_json import request_json

ROOT = Path(__file__).resolve().parent.parent
_CLOCK = time.thread_time
PATTERN_TYPES = [t for t in PII_TYPES if t not in ("PERSON", "LOCATION")]


def _answers() -> dict[str, tuple[list[str], str]]:
    rng = random.Random(3)
    words = "the of and to in is was for on that with as by at from this be are it an or"
    chosen = [rng.choice(words.split()) + rng.choice([" ", " ", ", ", ". "]) for _ in range(80_000)]
    prose = "".join(chosen)[:300_000]
    prose = prose[:150_000] + " Mail a@b.example or call +44 20 7946 0958. " + prose[150_000:]
    docs = (ROOT / "README.md").read_text() + (ROOT / "docs" / "safety.md").read_text()
    return {
        "email-only": (["EMAIL"], "Mail a@b.example. " + "Plain text. " * 25_000),
        "prose": (PATTERN_TYPES, prose),
        "dense": (PATTERN_TYPES, (docs * 5)[:300_000]),
    }


BODIES: dict[str, Any] = {
    "token-ids": {"model": "e", "input": [[1234] * 500] * 1000},
    "integers": {"input": list(range(100_000, 400_000))},
    "text-among-texts": {"input": ["x"] * 20 + ["long text " * 100_000] + ["x"] * 20},
    "long-turn": {
        "messages": [{"role": "user", "content": "hi"}] * 30 + [{"content": "é " * 400_000}]
    },
}


async def _held(work: Callable[[], Awaitable[Any]], tick: float) -> tuple[float, float]:
    """The longest gap (ms, `_CLOCK`) between two turns of a ticker while `work` runs,
    and `work`'s wall time (ms)."""
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = _CLOCK()
        while not done:
            await asyncio.sleep(tick)
            now = _CLOCK()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await work()
    took = time.perf_counter() - started
    done = True
    await task
    return max(gaps) * 1000, took * 1000


async def _measure(runs: int) -> dict[str, list[tuple[float, float]]]:
    rows: dict[str, list[tuple[float, float]]] = {}
    for name, (types, text) in _answers().items():
        profile = SafetyProfile(answer_pii=dict.fromkeys(types, "redact"))
        safety = SafetyOutcome(
            profile="p", action="allow", answer_mask=AnswerMask(PiiDetector(types), profile)
        )
        response = JSONResponse({"choices": [{"message": {"content": text}}]})

        async def mask(safety: SafetyOutcome = safety, response: JSONResponse = response) -> None:
            await chat._for_client(response, safety)

        rows[f"mask {name}"] = [await _held(mask, 0.001) for _ in range(runs)]
    for name, body in BODIES.items():

        async def write(body: Any = body) -> None:
            await request_json(body)

        rows[f"request_json {name}"] = [await _held(write, 0) for _ in range(runs)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clock", choices=["thread", "wall"], default="thread")
    args = parser.parse_args()
    global _CLOCK
    _CLOCK = time.perf_counter if args.clock == "wall" else time.thread_time
    rows = uvloop.run(_measure(args.runs))
    print(f"| step | loop's longest wait, ms ({args.clock}; each run, sorted) | wall ms (least) |")
    print("|---|---|---|")
    for name, runs in rows.items():
        held = sorted(round(h, 1) for h, _ in runs)
        print(f"| {name} | {held} | {round(min(w for _, w in runs))} |")
    print(machine())


if __name__ == "__main__":
    main()
