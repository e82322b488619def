"""llmroute with a large registry: load phases, cold and warm starts, memory, decision
and request latency, reloads under load, the CLI's registry commands.

    .venv/bin/python benchmarks/registry_scale.py [--sizes 10:1000 100:5000 300:20000]
        [--encoder builtin:static] [--keys 500] [--models 50] [--providers 10]
        [--port 18300] [--requests 400] [--reloads 1] [--cache-dir DIR]
        [--no-in-process] [--no-serve] [--no-cli] [--json]

Each size ROUTES:UTTERANCES is a registry generated into a temporary directory (never
the repo) from CLINC150 and Banking77 (../shared/data; their train splits, out-of-scope
rows left out): one route per intent (150 + 77; more routes than intents split each
intent's utterances between several routes), at most UTTERANCES/ROUTES of its training
utterances as examples (the datasets hold about 25k, so the largest sizes are capped by
them), `--models` echo models over `--providers` echo providers (in-process answers, no
upstream), a fallback per route and `--keys` client keys (SHA-256 form, one admin), with
the decision log in a SQLite file beside it.

Measured, per size:

* in process, the load's phases: YAML parse + validation, encoding the examples (cold:
  an empty embedding cache; warm: the on-disk cache filled), training the linear head
  (cold) or reading it from its cache (warm), and `Router.decide` p50/p99 on held-out
  CLINC150 prompts;
* `llmroute registry check` and `llmroute route TEXT`: wall time cold (empty
  ``$LLMROUTE_CACHE_DIR``) and warm; then, warm, `registry record` of 200 held-out
  prompts, `registry test` of those cases, and `registry diff` over the same prompts
  against a copy with one example added (its head is trained: cold) and against itself;
* `llmroute serve` (unless --no-serve): seconds until ``/ready`` answers (warm cache),
  RSS then, chat request latency over one keep-alive connection (the last of the 500
  keys: a linear search would pay most there), ``GET /v1/models`` and
  ``/dashboard/data``; then a reload (an example added to one route, so the intent head
  retrains, then SIGHUP) while 2 connections keep sending requests: the reload's
  seconds and the slowest and p99 request during it, beside those before it;
  ``--reloads N`` reloads N times in a row (each adds another example), and
  ``--cache-dir`` keeps serve's caches there, so that a second run's startup reads the
  head the first trained (each reload's example is new, so reloads always train).

Every loop is bounded (--requests, and a 120 s cap on each reload).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from _common import BANKING, CLINC, dump_json, log, machine

KEY = "scale-bench-key-{:04d}-0123456789abcdef"
LLMROUTE = str(Path(sys.executable).with_name("llmroute"))  # the venv's console script
PROMPTS = 200  # held-out prompts for the in-process decision timing
RELOAD_CAP_S = 120  # a reload not done by then is reported as such (reload_s None)


def _intents(path: Path) -> OrderedDict[str, list[str]]:
    found: OrderedDict[str, list[str]] = OrderedDict()
    with path.open() as lines:
        for line in lines:
            row = json.loads(line)
            if row["intent"] != "oos":
                found.setdefault(row["intent"], []).append(row["text"])
    return found


def generate(
    directory: Path,
    routes: int,
    utterances: int,
    *,
    encoder: str,
    models: int,
    providers: int,
    keys: int,
) -> tuple[Path, int]:
    """Write the registry (and nothing else) into `directory`; its path and the number
    of examples it holds."""
    intents = list(_intents(CLINC / "train.jsonl").items())
    intents += [(f"bank_{name}", ex) for name, ex in _intents(BANKING / "train.jsonl").items()]
    split = math.ceil(routes / len(intents))
    if split > 1:
        intents = [(f"{n}_{c}", ex[c::split]) for n, ex in intents for c in range(split)]
    per_route = max(1, utterances // routes)
    chosen = [(name, examples[:per_route]) for name, examples in intents[:routes]]
    registry: dict[str, Any] = {
        "encoder": encoder,
        "providers": {f"p{i}": {"kind": "echo"} for i in range(providers)},
        "models": {
            f"m{i}": {
                "provider": f"p{i % providers}",
                "model": f"echo-{i}",
                "price": {"input": 0.1 * (1 + i % 5), "output": 0.4 * (1 + i % 5)},
            }
            for i in range(models)
        },
        "routes": [
            {
                "name": name,
                "examples": examples,
                "target": f"m{i % models}",
                "policy": {"fallback": [f"m{(i + 1) % models}"]},
            }
            for i, (name, examples) in enumerate(chosen)
        ],
        "default": {"target": "m0"},
        "telemetry": {"url": f"sqlite:///{directory / 'log.db'}"},
    }
    if keys:
        registry["auth"] = {
            "keys": [
                {
                    "name": f"key{i}",
                    "sha256": hashlib.sha256(KEY.format(i).encode()).hexdigest(),
                    **({"admin": True} if i == 0 else {}),
                }
                for i in range(keys)
            ]
        }
    path = directory / "registry.yaml"
    path.write_text(yaml.safe_dump(registry, sort_keys=False))
    return path, sum(len(examples) for _, examples in chosen)


def held_out(n: int) -> list[str]:
    texts = [json.loads(line)["text"] for line in (CLINC / "val.jsonl").open()]
    return texts[:: max(1, len(texts) // n)][:n]


def in_process(path: Path, cache: Path) -> dict[str, Any]:
    """The load's phases, timed on their own, cold then warm; then decide()."""
    from llmroute.assemble import build_encoder, build_intent_layer
    from llmroute.decide import Router
    from llmroute.registry import load_registry

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    loaded = load_registry(path)
    out["parse_validate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    encoder = build_encoder(loaded.registry)
    out["encoder_load_s"] = time.perf_counter() - t0
    texts = [t for r in loaded.registry.routes for t in r.examples]
    t0 = time.perf_counter()
    encoder.encode(texts)
    out["encode_examples_s"] = time.perf_counter() - t0
    for state in ("cold", "warm"):  # cold: an empty cache dir; warm: what cold left there
        t0 = time.perf_counter()
        build_intent_layer(loaded.registry, encoder, cache_dir=cache)
        out[f"intent_layer_{state}_s"] = time.perf_counter() - t0
    router = Router(loaded, encoder=encoder, cache_dir=cache)
    prompts = held_out(PROMPTS)
    for prompt in prompts[:20]:
        router.decide(prompt)
    took = []
    for prompt in prompts:
        t0 = time.perf_counter()
        router.decide(prompt)
        took.append((time.perf_counter() - t0) * 1e3)
    out["decide_p50_ms"], out["decide_p99_ms"] = np.percentile(took, [50, 99]).tolist()
    return out


def cli_timings(path: Path, cache: Path) -> dict[str, float]:
    env = {**os.environ, "LLMROUTE_CACHE_DIR": str(cache)}
    out: dict[str, float] = {}
    for state in ("cold", "warm"):
        for name, args in (
            ("check", ["registry", "check", str(path)]),
            ("route", ["route", "-r", str(path), "what is my account balance"]),
        ):
            if state == "cold" and name == "route":
                subprocess.run(["rm", "-rf", str(cache)], check=True)
            t0 = time.perf_counter()
            subprocess.run([LLMROUTE, *args], env=env, check=True, capture_output=True)
            out[f"{name}_{state}_s"] = time.perf_counter() - t0
        if state == "cold":
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            subprocess.run(
                [LLMROUTE, "registry", "check", str(path)],
                env=env,
                check=True,
                capture_output=True,
            )  # fills the cache for the warm runs
    prompts = path.parent / "prompts.txt"
    prompts.write_text("\n".join(held_out(PROMPTS)) + "\n")
    cases = path.parent / "cases.yaml"
    changed = path.parent / "changed.yaml"
    document = yaml.safe_load(path.read_text())
    document["routes"][0]["examples"].append("an example added, so the head retrains")
    changed.write_text(yaml.safe_dump(document, sort_keys=False))
    for name, args in (
        ("record", ["registry", "record", str(prompts), "-o", str(cases), "-r", str(path)]),
        ("test", ["registry", "test", str(cases), "-r", str(path)]),
        ("diff_edit", ["registry", "diff", str(path), str(changed), "--data", str(prompts)]),
        ("diff_same", ["registry", "diff", str(path), str(path), "--data", str(prompts)]),
    ):
        t0 = time.perf_counter()
        subprocess.run([LLMROUTE, *args], env=env, check=True, capture_output=True)
        out[f"{name}_s"] = time.perf_counter() - t0
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _body(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": 8}


async def _serve_phase(
    url: str, pid: int, path: Path, keys: int, requests: int, log_path: Path, reloads: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    key = KEY.format(max(keys - 1, 0))
    headers = {"authorization": f"Bearer {key}"} if keys else {}
    admin = {"authorization": f"Bearer {KEY.format(0)}"} if keys else {}
    prompts = held_out(PROMPTS)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        took = []
        for i in range(requests):
            t0 = time.perf_counter()
            r = await client.post(
                "/v1/chat/completions", json=_body(prompts[i % len(prompts)]), headers=headers
            )
            took.append((time.perf_counter() - t0) * 1e3)
            r.raise_for_status()
        out["chat_p50_ms"], out["chat_p99_ms"] = np.percentile(took[20:], [50, 99]).tolist()
        out["rss_after_requests_mb"] = _rss_mb(pid)
        for name, target, who in (
            ("models", "/v1/models", headers),
            ("dashboard", "/dashboard/data?since=1h", admin),
        ):
            took = []
            for _ in range(10):
                t0 = time.perf_counter()
                r = await client.get(target, headers=who)
                took.append((time.perf_counter() - t0) * 1e3)
                r.raise_for_status()
            out[f"{name}_ms"] = float(np.median(took))

        for n in range(reloads):
            one = await _reload_under_load(url, pid, path, headers, prompts, log_path, n)
            out.update(one if n == 0 else {})
            out.setdefault("reloads", []).append(one)
    return out


async def _reload_under_load(
    url: str,
    pid: int,
    path: Path,
    headers: dict[str, str],
    prompts: list[str],
    log_path: Path,
    n: int,
) -> dict[str, Any]:
    """One reload (an example added, so the head retrains) while 2 connections keep
    sending requests in closed loops: its seconds, the slowest and p99 request during
    it, beside those of the 2 s before."""
    out: dict[str, Any] = {}
    document = yaml.safe_load(path.read_text())
    # new text each time (and each run: a reused --cache-dir must not hold its head)
    added = f"one more example, number {n} at {time.time_ns()}, so the head retrains"
    document["routes"][0]["examples"].append(added)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    lat: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def loop(first: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            i = first
            while not stop.is_set() and len(lat) < 100_000:
                t0 = time.perf_counter()
                r = await c.post(
                    "/v1/chat/completions",
                    json=_body(prompts[i % len(prompts)]),
                    headers=headers,
                )
                lat.append((t0, (time.perf_counter() - t0) * 1e3))
                r.raise_for_status()
                i += 2

    marker = log_path.stat().st_size
    tasks = [asyncio.create_task(loop(c)) for c in range(2)]
    await asyncio.sleep(2.0)
    started = time.perf_counter()
    os.kill(pid, signal.SIGHUP)
    reloaded = None
    while time.perf_counter() - started < RELOAD_CAP_S:
        with log_path.open() as f:
            f.seek(marker)
            tail = f.read()
        if "registry reloaded" in tail or "rejected" in tail:
            reloaded = time.perf_counter()
            out["reload_outcome"] = "rejected" if "rejected" in tail else "reloaded"
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    before = [ms for t, ms in lat if t < started]
    ended = reloaded or started + RELOAD_CAP_S  # not done by then: the cap's window
    during = [ms for t, ms in lat if started <= t <= ended]
    out["reload_s"] = None if reloaded is None else reloaded - started
    out["before_reload_max_ms"] = max(before, default=float("nan"))
    out["before_reload_p50_ms"] = float(np.median(before)) if before else float("nan")
    out["before_reload_p99_ms"] = float(np.percentile(before, 99)) if before else math.nan
    out["during_reload_max_ms"] = max(during, default=float("nan"))
    out["during_reload_p99_ms"] = float(np.percentile(during, 99)) if during else math.nan
    out["during_reload_requests"] = len(during)
    return out


def serve(
    path: Path, cache: Path, port: int, keys: int, requests: int, reloads: int = 1
) -> dict[str, Any]:
    env = {**os.environ, "LLMROUTE_CACHE_DIR": str(cache)}
    log_path = path.parent / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as sink:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [LLMROUTE, "serve", "-r", str(path), "--port", str(port), "--reload-interval", "0"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            ready = None
            while time.perf_counter() - t0 < 300 and proc.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                        ready = time.perf_counter() - t0
                        break
                time.sleep(0.05)
            if ready is None:
                raise RuntimeError(f"serve did not become ready: {log_path.read_text()[-2000:]}")
            out: dict[str, Any] = {"serve_ready_s": ready, "rss_ready_mb": _rss_mb(proc.pid)}
            phase = _serve_phase(url, proc.pid, path, keys, requests, log_path, reloads)
            out.update(asyncio.run(phase))
            return out
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["10:1000", "100:5000", "300:20000"])
    parser.add_argument("--encoder", default="builtin:static")
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--providers", type=int, default=10)
    parser.add_argument("--port", type=int, default=18300)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument(
        "--reloads", type=int, default=1, help="reloads under load, one after another"
    )
    parser.add_argument("--cache-dir", help="keep the caches here (a head trained once)")
    parser.add_argument("--no-in-process", action="store_true")
    parser.add_argument("--no-serve", action="store_true")
    parser.add_argument("--no-cli", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.requests <= 10_000:
        parser.error("--requests: 1 to 10000")
    if not 1 <= args.reloads <= 20:
        parser.error("--reloads: 1 to 20")
    results = []
    for size in args.sizes:
        routes, utterances = (int(part) for part in size.split(":"))
        if not (2 <= routes <= 2000 and 1 <= utterances <= 100_000):
            parser.error(f"size {size}: 2-2000 routes, 1-100000 utterances")
        with tempfile.TemporaryDirectory(prefix="llmroute-scale-") as tmp:
            directory = Path(tmp)
            path, examples = generate(
                directory,
                routes,
                utterances,
                encoder=args.encoder,
                models=args.models,
                providers=args.providers,
                keys=args.keys,
            )
            row: dict[str, Any] = {"routes": routes, "examples": examples}
            serve_cache = Path(args.cache_dir) if args.cache_dir else directory / "cache"
            if not args.no_in_process:
                log(f"{routes} routes, {examples} examples: in process")
                row.update(in_process(path, directory / "cache-inproc"))
            if not args.no_cli:
                log("  CLI")
                row.update(cli_timings(path, directory / "cache"))
            if not args.no_serve:
                log("  serve")
                row.update(
                    serve(path, serve_cache, args.port, args.keys, args.requests, args.reloads)
                )
            results.append(row)
            log(
                "  "
                + json.dumps(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                )
            )
    payload = {
        "machine": machine(),
        "encoder": args.encoder,
        "keys": args.keys,
        "models": args.models,
        "providers": args.providers,
        "results": results,
    }
    if args.json:
        dump_json(payload)
        return
    host = payload["machine"]
    print(f"# {host['cpu']}, {host['nproc']} CPUs, {host['date']}")
    print(f"# encoder {args.encoder}, {args.models} models / {args.providers} providers, ", end="")
    print(f"{args.keys} keys")
    columns = sorted(
        {k for row in results for k in row},
        key=lambda k: list(results[0]).index(k) if k in results[0] else 99,
    )
    for column in columns:
        cells = [row.get(column) for row in results]
        shown = [f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells]
        print(f"{column:28s} " + " ".join(f"{s:>12s}" for s in shown))


if __name__ == "__main__":
    main()
