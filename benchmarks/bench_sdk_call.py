"""What an SDK call costs on top of its provider: ``router.chat.completions.create``, not
streamed, telemetry off, against the in-process echo provider (no network) and against
the fake upstream of benchmarks/gateway_overhead.py over 127.0.0.1, with a pool model
(routing off) and with ``model="auto"`` (the static encoder's decision).

    .venv/bin/python benchmarks/bench_sdk_call.py [--calls 2000] [--rounds 6]
        [--trees OLD NEW] [--port 0] [--json]

Each measurement is one process: a router per configuration, 200 warm-up calls, then
`--calls` sequential calls of the 60 prompts of examples/eval.jsonl in turn, timing each
(wall) and the process's CPU over all of them (``time.process_time``: on a shared
machine the other jobs' share of the cores is not counted, so CPU is what to compare).
With ``--trees OLD NEW`` the rounds alternate the two source trees (each tree's ``src``
on ``PYTHONPATH``; OLD, NEW, NEW, OLD, ...) against one fake upstream and one pair of
registries, and the table gives medians over rounds and how many pairs went which way.
Without it the installed ``llmroute`` is measured for `--rounds` rounds. `--port` pins
the fake upstream's port.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import log, machine
from gateway_overhead import EXAMPLE, PROMPTS, bench_registry, upstream

TARGETS = ("echo", "upstream")
MODELS = ("small", "auto")
WARMUP = 200
KEYS = ("cpu_us", "p50_us")


def echo_registry(path: Path) -> None:
    """examples/registry.yaml with every model answered by the echo provider."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["encoder"] = "builtin:static"
    data["providers"] = {"echo": {"kind": "echo"}}
    for model in data["models"].values():
        model.pop("deployments", None)
        model["provider"] = "echo"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def measure(registries: dict[str, str], calls: int) -> dict[str, dict[str, float]]:
    """One process's numbers, every target and model in turn."""
    from llmroute import Router

    os.environ["LLMROUTE_TELEMETRY_URL"] = "off"
    texts = [json.loads(line)["text"] for line in PROMPTS.read_text().splitlines() if line]
    out: dict[str, dict[str, float]] = {}
    for target in TARGETS:
        with Router.from_yaml(registries[target]) as router:
            create = router.chat.completions.create
            for model in MODELS:
                for i in range(WARMUP):
                    create(model=model, messages=[{"role": "user", "content": texts[i % 60]}])
                times = []
                cpu0 = time.process_time()
                for i in range(calls):
                    messages = [{"role": "user", "content": texts[i % len(texts)]}]
                    start = time.perf_counter()
                    create(model=model, messages=messages)
                    times.append(time.perf_counter() - start)
                cpu = time.process_time() - cpu0
                out[f"{target}/{model}"] = {
                    "cpu_us": cpu / calls * 1e6,
                    "p50_us": statistics.median(times) * 1e6,
                }
    return out


def _child(tree: str | None, registries: dict[str, str], calls: int) -> dict[str, Any]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(Path(tree) / "src")
    command = [sys.executable, __file__, "--measure", json.dumps(registries)]
    command += ["--calls", str(calls)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree or 'installed'}: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    trees: list[str | None] = list(args.trees) if args.trees else [None]
    rounds: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(trees))}
    with tempfile.TemporaryDirectory() as tmpdir, upstream(args.port) as (up_url, _pid):
        registries = {"echo": f"{tmpdir}/echo.yaml", "upstream": f"{tmpdir}/upstream.yaml"}
        echo_registry(Path(registries["echo"]))
        bench_registry(Path(registries["upstream"]), up_url, "static")
        for r in range(args.rounds):
            order = list(range(len(trees)))
            if r % 2:
                order.reverse()  # OLD NEW, NEW OLD, ...: a drift in load falls on both
            for i in order:
                result = _child(trees[i], registries, args.calls)
                log(f"round {r + 1} {trees[i] or 'installed'}: {json.dumps(result)}")
                rounds[i].append(result)
    points = [f"{t}/{m}" for t in TARGETS for m in MODELS]
    summary: dict[str, Any] = {}
    for point in points:
        row: dict[str, Any] = {}
        for i in range(len(trees)):
            for key in KEYS:
                row[f"{key}[{i}]"] = statistics.median(r[point][key] for r in rounds[i])
        if len(trees) == 2:
            for key in KEYS:
                pairs = [
                    (new[point][key], old[point][key])
                    for old, new in zip(rounds[0], rounds[1], strict=True)
                ]
                row[f"{key}_ratio"] = statistics.median(n / o for n, o in pairs)
                row[f"{key}_higher"] = sum(n > o for n, o in pairs)
        summary[point] = row
    return {
        "benchmark": "bench_sdk_call",
        "machine": machine(),
        "trees": trees,
        "calls": args.calls,
        "rounds": args.rounds,
        "results": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--trees", nargs=2, metavar=("OLD", "NEW"))
    parser.add_argument("--port", type=int, default=0, help="the fake upstream's port")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure), args.calls)))
        return
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    two = len(report["trees"]) == 2
    head = "| call | CPU µs | p50 µs |" + (" CPU new/old (higher) | p50 new/old (higher) |" * two)
    print(head + "\n|" + "---|" * head.count(" |"))
    for point, row in report["results"].items():
        cells = [" / ".join(f"{row[f'{k}[{i}]']:.0f}" for i in range(1 + two)) for k in KEYS]
        if two:
            cells += [f"{row[f'{k}_ratio']:.3f} ({row[f'{k}_higher']})" for k in KEYS]
        print(f"| {point} | " + " | ".join(cells) + " |")
    rounds, calls = report["rounds"], report["calls"]
    print(f"\n{rounds} rounds of {calls} calls; {json.dumps(report['machine'])}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
