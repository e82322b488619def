"""numpy's BLAS threads in `llmroute serve`: the gateway with OpenBLAS on one thread
against OpenBLAS's own default (a thread per core), end to end, alternated in one run.

    .venv/bin/python benchmarks/bench_blas_threads.py [--rounds 2] [--duration 5]
        [--concurrency 1,8] [--workers 1,2] [--sizes example,100:5000]
        [--settings default,1] [--encoder minilm-int8] [--json]

Each point starts `llmroute serve` afresh with ``OPENBLAS_NUM_THREADS`` (and
``OMP_NUM_THREADS``/``MKL_NUM_THREADS``) either removed from its environment ("default":
whatever `serve` itself does then) or set to 1 or N, then measures it with the closed-loop
load generator of gateway_overhead.py (same fake upstream, same prompts, `model: auto`).
The settings alternate, the first one swapped each round, so a drifting machine load
falls on both. Registries: ``example`` is examples/registry.yaml with its models on the
fake upstream (as gateway_overhead.py); ``R:U`` is the same registry with its routes
and R routes more, of at most U/R CLINC150/Banking77 training utterances each
(registry_scale.py's generator). Caches (embeddings, heads) are shared across points, so
only the first start of a registry encodes its examples.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from _common import log, machine
from gateway_overhead import (
    bench_registry,
    bodies,
    free_port,
    measure,
    process,
    upstream,
)
from registry_scale import generate

BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def scaled_registry(path: Path, base: Path, routes: int, utterances: int, tmp: Path) -> int:
    """`base` (the example on the fake upstream) with `routes` generated routes added."""
    folder = tmp / f"gen-{routes}"
    folder.mkdir()
    generated, examples = generate(
        folder, routes, utterances, encoder="x", models=1, providers=1, keys=0
    )
    data = yaml.safe_load(base.read_text(encoding="utf-8"))
    models = list(data["models"])
    new = yaml.safe_load(generated.read_text(encoding="utf-8"))["routes"]
    data["routes"] += [  # the example's own kept: its rules name them
        {"name": f"g_{r['name']}", "examples": r["examples"], "target": models[i % len(models)]}
        for i, r in enumerate(new)
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return examples


def _threads(pid: int) -> int:
    """Threads of `pid` and its children (the uvicorn workers)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += len(os.listdir(f"/proc/{current}/task"))
            kids = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(k) for k in kids)
    return total


@contextmanager
def gateway(registry: Path, workers: int, blas: str, tmp: Path) -> Iterator[tuple[str, int]]:
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
    if blas != "default":
        env |= {name: blas for name in BLAS_VARS}
    env["LLMROUTE_CACHE_DIR"] = str(tmp / "cache")
    env["LLMROUTE_TELEMETRY_URL"] = f"sqlite:///{tmp / 'log.db'}"
    port = free_port()
    llmroute = Path(sys.executable).parent / "llmroute"
    command = [str(llmroute), "serve", "--registry", str(registry), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    logfile = tmp / f"serve-{registry.stem}-w{workers}-{blas}.log"
    # process() adds os.environ under `env`: give it the whole environment and clear
    # os.environ's BLAS variables for the call.
    saved = {k: os.environ.pop(k) for k in BLAS_VARS if k in os.environ}
    try:
        with process(command, f"{url}/ready", logfile, env) as proc:
            yield url, proc.pid
    finally:
        os.environ.update(saved)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    settings = args.settings.split(",")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    workers_list = [int(w) for w in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-blas-"))
    try:
        with upstream() as (up_url, up_pid):
            auto = bodies(tmp, "auto")
            base = tmp / "registry-example.yaml"
            bench_registry(base, up_url, args.encoder)
            registries: list[tuple[str, Path]] = []
            for size in args.sizes.split(","):
                if size == "example":
                    registries.append(("example", base))
                    continue
                routes, utterances = (int(x) for x in size.split(":"))
                path = tmp / f"registry-{routes}.yaml"
                n = scaled_registry(path, base, routes, utterances, tmp)
                registries.append((f"{routes} routes / {n} examples", path))
            for rnd in range(args.rounds):
                order = settings if rnd % 2 == 0 else settings[::-1]
                for name, path in registries:
                    for workers in workers_list:
                        for blas in order:
                            with gateway(path, workers, blas, tmp) as (url, pid):
                                threads = _threads(pid)
                                for c in concurrencies:
                                    if workers > 1 and c == 1:
                                        continue
                                    r = measure(url, auto, c, args, pid, up_pid)
                                    row = {
                                        "round": rnd,
                                        "registry": name,
                                        "workers": workers,
                                        "blas": blas,
                                        "c": c,
                                        "threads": threads,
                                        "load1": os.getloadavg()[0],
                                    }
                                    row |= {
                                        k: r.get(k)
                                        for k in ("p50_ms", "p99_ms", "rps", "completed", "errors")
                                    }
                                    row["cpu_ms_per_req"] = r["cpu_ms_per_req"]
                                    rows.append(row)
                                    log(
                                        f"r{rnd} {name:<28} w={workers} blas={blas:<7} c={c:<2} "
                                        f"p50 {row['p50_ms']:7.2f} p99 {row['p99_ms']:7.2f} ms "
                                        f"{row['rps']:6.0f} req/s cpu {row['cpu_ms_per_req']:.2f} "
                                        f"ms/req thr={threads} load {row['load1']:.1f}"
                                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Medians over rounds per (registry, workers, C, setting)."""
    keys: dict[tuple[str, int, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        keys.setdefault((r["registry"], r["workers"], r["c"], r["blas"]), []).append(r)
    lines = [
        "| registry | workers | C | BLAS threads | p50 ms | p99 ms | req/s | CPU ms/req | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, workers, c, blas), group in keys.items():

        def med(key: str, group: list[dict[str, Any]] = group) -> float:
            return statistics.median(float(g[key]) for g in group)

        loads = [g["load1"] for g in group]
        lines.append(
            f"| {name} | {workers} | {c} | {blas} | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} "
            f"| {med('rps'):.0f} | {med('cpu_ms_per_req'):.2f} "
            f"| {min(loads):.1f}–{max(loads):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap per point")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--workers", default="1,2", help="comma-separated --workers values")
    parser.add_argument("--sizes", default="example,100:5000")
    parser.add_argument("--settings", default="default,1", help="'default' or a thread count")
    parser.add_argument("--encoder", default="minilm-int8", help="builtin encoder name")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    info = machine()
    rows = run(args)
    if args.json:
        print(json.dumps({"machine": info, "rows": rows}, indent=2))
    else:
        print(f"{info['date']}, {info['nproc']} CPUs, {info['cpu']}, `{info['command']}`")
        print(table(rows))


if __name__ == "__main__":
    main()
