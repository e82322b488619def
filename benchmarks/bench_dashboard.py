"""What one dashboard refresh costs: reading a window of the decision log (the newest
N decisions of the window and of the one before it, for drift) and building the JSON,
on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/bench_dashboard.py [--json] [--rows 1000 5000 20000]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--no-postgres]
        [--fill N] [--gateway] [--duration 10] [--rounds 2]

The log holds --fill (default max(--rows)) decisions in the last hour and as many in
the hour before,
built from the tests' fully populated record (every layer's signals, safety, reasoning)
over six routes, 3% of them with a fallback, so rows parse as a gateway's do. Each
size is timed `--repeat` times (cold payload cache: `_read` is called directly, as the
server does on a miss); the median is printed. The server keeps one payload per
window for 5 s, so several open pages cost one refresh, not one each.

`--gateway` measures what refreshes do to the requests a gateway serves meanwhile: a
`llmroute serve` (static encoder, examples/registry.yaml on benchmarks/_http_bench.py's
fake upstream) logging to a SQLite file that already holds max(--rows) decisions of the
last hour, under a closed loop of 4 connections; rounds alternate between no dashboard
and a reader that fetches /dashboard/data once a second with a new window text each
time (so the 5 s payload cache never answers: the worst case of many distinct windows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import dump_json, log, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "telemetry"))

from llmroute.server.dashboard import LogView, _read
from llmroute.telemetry.record import DecisionRecord
from llmroute.telemetry.store import SqliteStore, Store
from llmroute.telemetry.windows import parse_window

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
ROUTES = ("code", "chat", "billing", "support", "math", "default")


def make_records(n: int, start: float, span: float, rng: random.Random) -> list[DecisionRecord]:
    from conftest import _make_record  # the tests' fully populated record

    records = []
    for i in range(n):
        record = _make_record(
            i,
            ts=start + span * i / n,
            latency_ms=rng.lognormvariate(6, 0.6),
            attempts=("large (timeout)",) if rng.random() < 0.03 else (),  # 3% fell back
        )
        route = ROUTES[min(int(rng.expovariate(0.7)), len(ROUTES) - 1)]
        decision = dataclasses.replace(record.decision, route=route)
        records.append(dataclasses.replace(record, decision=decision))
    return records


def fill(store: Store, n: int) -> None:
    store.migrate()
    rng = random.Random(0)
    now = time.time()
    for start in (now - 7190, now - 3590):  # well inside each hour when it is read
        records = make_records(n, start, 3580, rng)
        for i in range(0, n, 5000):
            store.write_decisions(records[i : i + 5000])


def measure(store: Store, sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    view = LogView(store, store.url, None)
    out = []
    for size in sizes:
        times, payload = [], {}
        for _ in range(repeat):
            window = parse_window("1h")
            t0 = time.perf_counter()
            payload = _read(view, window, size)
            times.append(time.perf_counter() - t0)
        out.append(
            {
                "rows": size,
                "in_window": payload["sample"]["in_window"],
                "ms_median": round(statistics.median(times) * 1000, 1),
                "ms_min": round(min(times) * 1000, 1),
                "json_kb": round(len(json.dumps(payload)) / 1024, 1),
            }
        )
        log(f"{store.url}: {out[-1]}")
    return out


def _reader(url: str, stop: Any, refresh_ms: list[float]) -> None:
    """Fetch the dashboard's data once a second, each time for a new window text."""
    import httpx

    k = 0
    while not stop.wait(1.0):
        k += 1
        t0 = time.perf_counter()
        httpx.get(f"{url}/dashboard/data?since={3600 + k}s", timeout=60)
        refresh_ms.append((time.perf_counter() - t0) * 1000)


def gateway_rounds(n: int, duration: float, rounds: int) -> list[dict[str, Any]]:
    """Request latency through a gateway with and without dashboard refreshes."""
    import threading

    from gateway_overhead import bench_registry, bodies, free_port, measure, process, upstream

    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name, upstream() as (up_url, up_pid):
        tmp = Path(tmp_name)
        store = SqliteStore(tmp / "log.db")
        fill(store, n)
        store.close()
        registry = tmp / "registry.yaml"
        bench_registry(registry, up_url, "static")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(Path(sys.executable).parent / "llmroute"), "serve"]
        command += ["--registry", str(registry), "--port", str(port)]
        env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp / 'log.db'}"}
        with process(command, f"{url}/ready", tmp / "serve.log", env) as proc:
            options = argparse.Namespace(duration=duration, max_requests=10**9)
            body = bodies(tmp, "auto")
            for i in range(2 * rounds):
                busy = i % 2 == 1
                stop = threading.Event()
                refresh_ms: list[float] = []

                thread = (
                    threading.Thread(target=_reader, args=(url, stop, refresh_ms)) if busy else None
                )
                if thread is not None:
                    thread.start()
                result = measure(url, body, 4, options, proc.pid, up_pid)
                stop.set()
                if thread is not None:
                    thread.join()
                row = {
                    "dashboard": "refresh every 1 s" if busy else "none",
                    "requests": result.get("completed"),
                    "rps": round(result.get("rps", 0.0), 1),
                    "p50_ms": round(result.get("p50_ms", 0.0), 2),
                    "p99_ms": round(result.get("p99_ms", 0.0), 2),
                    "refreshes": len(refresh_ms),
                    "refresh_ms_median": round(statistics.median(refresh_ms), 1)
                    if refresh_ms
                    else None,
                }
                log(f"gateway round {i}: {row}")
                out.append(row)
    return out


def _pg(url: str) -> tuple[Store, str]:
    import psycopg

    from llmroute.telemetry.store.postgres import PostgresStore

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    return PostgresStore(f"{url}?options=-csearch_path%3D{schema}"), schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fill", type=int, help="decisions per hour in the log")
    parser.add_argument("--postgres", default=PG_DEFAULT)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--gateway", action="store_true")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.gateway:
        rows = gateway_rounds(args.fill or max(args.rows), args.duration, args.rounds)
        if args.json:
            dump_json({"machine": machine(), "gateway": rows})
            return
        print(f"gateway requests (concurrency 4) with {args.fill or max(args.rows)} decisions")
        print("| dashboard | requests | req/s | p50 ms | p99 ms | refreshes | refresh ms |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            print(
                f"| {row['dashboard']} | {row['requests']} | {row['rps']} | {row['p50_ms']} "
                f"| {row['p99_ms']} | {row['refreshes']} | {row['refresh_ms_median']} |"
            )
        return
    n = args.fill or max(args.rows)
    results: dict[str, Any] = {"machine": machine(), "log_rows_per_hour": n}
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.db")
        fill(store, n)
        results["sqlite"] = measure(store, args.rows, args.repeat)
        store.close()
    if not args.no_postgres:
        import psycopg

        pg, schema = _pg(args.postgres)
        try:
            fill(pg, n)
            results["postgres"] = measure(pg, args.rows, args.repeat)
        finally:
            pg.close()
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
    if args.json:
        dump_json(results)
        return
    print(f"one dashboard refresh, window 1h, {n} decisions in it and {n} in the hour before")
    print("| backend | rows read per window | read + build, median ms | min ms | JSON kB |")
    print("|---|---|---|---|---|")
    for backend in ("sqlite", "postgres"):
        for row in results.get(backend, []):
            print(
                f"| {backend} | {row['rows']} | {row['ms_median']} | {row['ms_min']} "
                f"| {row['json_kb']} |"
            )


if __name__ == "__main__":
    main()
