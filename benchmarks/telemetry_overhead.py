"""What the decision log and metrics cost the request path: `llmroute serve` with
telemetry off, on into SQLite and on into PostgreSQL, in one run, against the same fast
fake upstream.

    .venv/bin/python benchmarks/telemetry_overhead.py [--duration 4] [--rounds 3]
        [--concurrency 1,16] [--model small] [--pg postgresql://postgres@127.0.0.1:5432/test]
        [--json]

Same processes and load generator as benchmarks/gateway_overhead.py (whose helpers this
imports). Each round starts one gateway per configuration, in turn (off, sqlite, pg), so
slow drift of a shared machine spreads over all three; the table shows the median over
rounds of p50 latency and of gateway CPU per request, and the difference from "off".
`--model small` pins a pool model (routing off), so the difference is telemetry's alone;
`--model auto` adds routing. With telemetry on, prompts are stored as hashes (the
default), metrics are always on (they are part of "off" too: `/metrics` cannot be
switched off). The PostgreSQL schema is created for the run and dropped after it.
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
from gateway_overhead import (
    bench_registry,
    bodies,
    free_port,
    measure,
    process,
    upstream,
)

CONFIGS = ("off", "sqlite", "pg")
TARGET_MS = 0.2


def _gateway_env(config: str, tmp: Path, pg: str) -> dict[str, str]:
    if config == "off":
        return {"LLMROUTE_TELEMETRY_URL": "off"}
    if config == "sqlite":
        return {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp / f'log-{uuid.uuid4().hex}.db'}"}
    return {"LLMROUTE_TELEMETRY_URL": pg}


def _pg_schema(base: str) -> tuple[str, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    return schema, f"{base}{sep}options=-csearch_path%3D{schema}"


def _drop_schema(base: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run(args: argparse.Namespace) -> dict[str, Any]:
    levels = [int(c) for c in args.concurrency.split(",")]
    schema, pg_url = _pg_schema(args.pg)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {
        c: {n: [] for n in levels} for c in CONFIGS
    }
    try:
        with tempfile.TemporaryDirectory() as tmpdir, upstream() as (up_url, up_pid):
            tmp = Path(tmpdir)
            registry = tmp / "registry.yaml"
            bench_registry(registry, up_url, "static")
            body_file = bodies(tmp, args.model)
            llmroute = Path(sys.executable).parent / "llmroute"
            for round_no in range(args.rounds):
                for config in CONFIGS:
                    port = free_port()
                    url = f"http://127.0.0.1:{port}"
                    command = [str(llmroute), "serve", "--registry", str(registry)]
                    command += ["--host", "127.0.0.1", "--port", str(port)]
                    logfile = tmp / f"serve-{config}-{round_no}.log"
                    env = _gateway_env(config, tmp, pg_url)
                    with process(command, f"{url}/ready", logfile, env) as proc:
                        for level in levels:
                            r = measure(url, body_file, level, args, proc.pid, up_pid)
                            results[config][level].append(r)
                            log(
                                f"round {round_no} {config:<6} c={level:<3} "
                                f"p50 {r['p50_ms']:.3f} ms cpu {r['cpu_ms_per_req']:.3f} ms/req "
                                f"n={r['completed']} err={r['errors']}"
                            )
                        time.sleep(0.5)  # let the writer flush before the process stops
    finally:
        _drop_schema(args.pg, schema)
    rows = []
    for level in levels:
        base = _summary(results["off"][level])
        for config in CONFIGS:
            s = _summary(results[config][level])
            s |= {"config": config, "c": level}
            s["added_p50_ms"] = s["p50_ms"] - base["p50_ms"]
            s["added_cpu_ms"] = s["cpu_ms_per_req"] - base["cpu_ms_per_req"]
            rows.append(s)
    return {"machine": machine(), "model": args.model, "rounds": args.rounds, "rows": rows}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "rps": statistics.median(r["rps"] for r in runs),
        "cpu_ms_per_req": statistics.median(r["cpu_ms_per_req"] for r in runs),
        "requests": sum(r["completed"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--model", default="small")
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument(
        "--pg",
        default=os.environ.get("LLMROUTE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = run(args)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    log(f"machine: {out['machine']}")
    print(
        "| telemetry | C | p50 ms | p99 ms | req/s | CPU ms/req | added p50 ms | added CPU ms/req |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in out["rows"]:
        print(
            f"| {r['config']} | {r['c']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['rps']:.0f} "
            f"| {r['cpu_ms_per_req']:.3f} | {r['added_p50_ms']:+.3f} | {r['added_cpu_ms']:+.3f} |"
        )
    worst = max(r["added_p50_ms"] for r in out["rows"] if r["c"] == 1)
    verdict = "met" if worst <= TARGET_MS else "missed"
    print(f"\ntarget: telemetry adds <= {TARGET_MS} ms p50 at C=1: {verdict} ({worst:+.3f} ms)")


if __name__ == "__main__":
    main()
