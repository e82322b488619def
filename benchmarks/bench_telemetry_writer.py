"""Decision-log throughput: N records through `TelemetryWriter` into PostgreSQL and
SQLite, the sustained records/s (first offer to the last row committed) and what
`offer()` costs the request path.

    .venv/bin/python benchmarks/bench_telemetry_writer.py [--json] [-n 50000]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--no-postgres]
        [--insert-method copy executemany]

Records are built from one real-shaped `Decision` per record (every layer, candidates,
safety, reasoning filled), with prompt mode ``hash``, so `to_row` (JSON, SHA-256) is
paid by the writer thread as in the gateway. Offers are paced in bursts of
`--burst` records; each `offer()` is timed alone with perf_counter_ns. PostgreSQL runs
in its own schema, dropped at the end; SQLite in a temporary file. Writer settings are
the registry defaults (queue 10,000, batch 500, flush 0.2 s), except that the queue is
sized so a run measures the store, not drops (drops are reported anyway).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import dump_json, log, machine, percentiles

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "telemetry"))

from llmroute.telemetry.record import DecisionRecord
from llmroute.telemetry.store import SqliteStore, Store
from llmroute.telemetry.store.postgres import PostgresStore
from llmroute.telemetry.writer import TelemetryWriter

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def make_records(n: int) -> list[DecisionRecord]:
    from conftest import _make_record  # the tests' fully populated record

    return [_make_record(i, ts=time.time()) for i in range(n)]


def run(store: Store, records: list[DecisionRecord], burst: int) -> dict[str, Any]:
    store.migrate()
    writer = TelemetryWriter(
        store, queue_size=max(10_000, len(records)), batch_size=500, flush_seconds=0.2
    ).start()
    costs: list[float] = []
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for i in range(0, len(records), burst):
        for record in records[i : i + burst]:
            t0 = clock()
            writer.offer(record)
            costs.append((clock() - t0) / 1000)
        time.sleep(0)  # let the writer thread in between bursts
    offered = time.perf_counter() - started
    writer.flush(600)
    elapsed = time.perf_counter() - started
    writer.close()
    count = store.count_decisions()
    return {
        "records": len(records),
        "stored": count,
        "dropped": writer.dropped,
        "seconds": round(elapsed, 3),
        "records_per_s": round(count / elapsed),
        "offer_seconds": round(offered, 3),
        "offer": percentiles(costs),
    }


def _pg(url: str, method: str) -> tuple[PostgresStore, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    sep = "&" if "?" in url else "?"
    scoped = f"{url}{sep}options=-csearch_path%3D{schema}"
    return PostgresStore(scoped, insert_method=method), schema  # type: ignore[arg-type]


def _drop(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--records", type=int, default=50_000)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--postgres", default=PG_DEFAULT)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--insert-method", nargs="+", default=["copy", "executemany"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    log(f"building {args.records:,} records")
    records = make_records(args.records)
    results: dict[str, Any] = {}
    if not args.no_postgres:
        for method in args.insert_method:
            store, schema = _pg(args.postgres, method)
            try:
                log(f"postgres ({method}) ...")
                results[f"postgres_{method}"] = run(store, records, args.burst)
            finally:
                store.close()
                _drop(args.postgres, schema)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.db")
        log("sqlite ...")
        results["sqlite"] = run(store, records, args.burst)
        store.close()

    if args.json:
        dump_json({"machine": machine(), "burst": args.burst, "results": results})
        return
    print(
        f"{'backend':<22} {'records/s':>10} {'stored':>8} {'dropped':>8} "
        f"{'offer p50 µs':>13} {'offer p99 µs':>13}"
    )
    for name, r in results.items():
        o = r["offer"]
        print(
            f"{name:<22} {r['records_per_s']:>10,} {r['stored']:>8,} {r['dropped']:>8,} "
            f"{o['p50_us']:>13} {o['p99_us']:>13}"
        )


if __name__ == "__main__":
    main()
