"""What the decision log costs an SDK call: ``router.chat.completions.create`` with
telemetry off, into SQLite and into PostgreSQL, in one run, against the fast fake upstream
of benchmarks/gateway_overhead.py.

    .venv/bin/python benchmarks/sdk_telemetry_overhead.py [--calls 2000] [--rounds 3]
        [--model small] [--pg postgresql://postgres@127.0.0.1:5432/test] [--json]

Each round builds one router per configuration, in turn (off, sqlite, pg), warms it up,
then makes `--calls` sequential synchronous calls, timing each (wall) and the process's
CPU over all of them (the writer thread included: that is the log's whole cost). The
table shows medians over rounds. `--model small` pins a pool model, so the difference is
the log's alone. The PostgreSQL schema is created for the run and dropped after it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import log, machine
from gateway_overhead import PROMPTS, bench_registry, upstream
from telemetry_overhead import _drop_schema, _pg_schema

from llmroute import Router

CONFIGS = ("off", "sqlite", "pg")
WARMUP = 100


def _url(config: str, tmp: Path, pg: str) -> str:
    if config == "off":
        return "off"
    if config == "sqlite":
        return f"sqlite:///{tmp / f'sdk-{uuid.uuid4().hex}.db'}"
    return pg


def _one(registry: Path, url: str, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    os.environ["LLMROUTE_TELEMETRY_URL"] = url
    with Router.from_yaml(registry) as router:
        create = router.chat.completions.create
        for i in range(WARMUP):
            create(model=args.model, messages=[{"role": "user", "content": texts[i % len(texts)]}])
        times = []
        cpu0 = time.process_time()
        for i in range(args.calls):
            messages = [{"role": "user", "content": texts[i % len(texts)]}]
            start = time.perf_counter()
            create(model=args.model, messages=messages)
            times.append(time.perf_counter() - start)
        writer = router.chat._engine.log.writer
        if writer is not None:
            writer.flush(10.0)  # the log's work for these calls, inside the CPU window
        cpu = time.process_time() - cpu0
        written = 0 if writer is None else writer.written
        dropped = 0 if writer is None else writer.dropped
    times.sort()
    return {
        "p50_ms": times[len(times) // 2] * 1e3,
        "p99_ms": times[int(len(times) * 0.99)] * 1e3,
        "cpu_ms_per_call": cpu / args.calls * 1e3,
        "written": written,
        "dropped": dropped,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = [json.loads(line)["text"] for line in PROMPTS.read_text().splitlines() if line]
    schema, pg_url = _pg_schema(args.pg)
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGS}
    try:
        with tempfile.TemporaryDirectory() as tmpdir, upstream() as (up_url, _pid):
            tmp = Path(tmpdir)
            registry = tmp / "registry.yaml"
            bench_registry(registry, up_url, args.encoder)
            for r in range(args.rounds):
                for config in CONFIGS:
                    result = _one(registry, _url(config, tmp, pg_url), texts, args)
                    log(f"round {r + 1} {config}: {json.dumps(result)}")
                    results[config].append(result)
    finally:
        _drop_schema(args.pg, schema)
    summary: dict[str, Any] = {}
    for config in CONFIGS:
        rows = results[config]
        summary[config] = {
            key: statistics.median(row[key] for row in rows)
            for key in ("p50_ms", "p99_ms", "cpu_ms_per_call")
        } | {"written": sum(r["written"] for r in rows), "dropped": sum(r["dropped"] for r in rows)}
    return {
        "benchmark": "sdk_telemetry_overhead",
        "machine": machine(),
        "calls": args.calls,
        "rounds": args.rounds,
        "model": args.model,
        "encoder": args.encoder,
        "results": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="small")
    parser.add_argument("--encoder", default="static")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    off = report["results"]["off"]
    print("| decision log | p50 ms | p99 ms | CPU ms/call | added p50 ms | added CPU ms/call |")
    print("|---|---|---|---|---|---|")
    for config in CONFIGS:
        row = report["results"][config]
        added = (
            ("–", "–")
            if config == "off"
            else (
                f"{row['p50_ms'] - off['p50_ms']:+.3f}",
                f"{row['cpu_ms_per_call'] - off['cpu_ms_per_call']:+.3f}",
            )
        )
        print(
            f"| {config} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | "
            f"{row['cpu_ms_per_call']:.3f} | {added[0]} | {added[1]} |"
        )
    print(
        f"\nwritten {report['results']['sqlite']['written']} (sqlite), "
        f"{report['results']['pg']['written']} (pg); machine {json.dumps(report['machine'])}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
