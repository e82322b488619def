"""Gateway overhead: the latency and CPU time `llmroute serve` adds in front of a fast
fake upstream, with routing on (`model: auto`) and off (a pool model name), its maximum
requests/s, and, with --workers 2, its requests/s against LiteLLM's proxy.

    .venv/bin/python benchmarks/gateway_overhead.py [--duration 5] [--concurrency 1,16,64]
        [--encoders minilm-int8,minilm] [--workers 2] [--max-requests 100000]
        [--litellm-venv benchmarks/.venv-litellm] [--stream] [--ports FIRST] [--json]
        [--markdown]

Four kinds of process, all on 127.0.0.1: the fake upstream (benchmarks/_http_bench.py,
raw asyncio, one fixed chat.completion with usage), the gateway (`llmroute serve`, only
its public CLI and HTTP interface), LiteLLM's proxy (when its venv exists) and the load
generator (_http_bench.py again: C keep-alive connections, closed loop, warm-up first,
then --duration seconds or --max-requests requests, whichever comes first).

For each concurrency C the upstream is measured directly, then through the gateway, in
the same run; added latency = gateway p50 − direct p50. Gateway CPU time per request is
utime+stime of the gateway process and all its descendants (the uvicorn workers), read
from /proc/<pid>/stat right before and after the measured window (after warm-up),
divided by the requests completed in it. Prompts: the 60 texts of examples/eval.jsonl
(short chat requests), in turn. The registry is examples/registry.yaml with every model
moved to the fake upstream and the encoder set per run.

`--stream` sends every request (direct ones too) with ``"stream": true``: the fake
upstream answers a short SSE stream (a role chunk, 20 content chunks, a finish chunk, a
usage chunk, ``data: [DONE]``, written at once, an event a chunk), the load generator
reads each answer to its last chunk (latency = to the end of the stream) and counts one
not ending with ``data: [DONE]`` as an error. The targets below are the non-stream ones.

`--ports FIRST` listens on FIRST (the fake upstream), FIRST+1 (the gateway) and FIRST+2
(LiteLLM's proxy) instead of free ports the system picks, for a machine that allows only
some.

`--markdown` prints a "## Gateway overhead" section to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from _common import ROOT, log, machine

HERE = Path(__file__).resolve().parent
HELPER = HERE / "_http_bench.py"
EXAMPLE = ROOT / "examples" / "registry.yaml"
PROMPTS = ROOT / "examples" / "eval.jsonl"
DEFAULT_LITELLM_VENV = HERE / ".venv-litellm"
LITELLM_INSTALL = (
    "python3 -m venv benchmarks/.venv-litellm && "
    "benchmarks/.venv-litellm/bin/pip install -U pip && "
    "benchmarks/.venv-litellm/bin/pip install 'litellm[proxy]<1.82.7' "
    "--uploaded-prior-to 2026-02-27T00:00:00Z"
)
POOL_MODEL = "small"  # routing off: a pool model name
TICKS = os.sysconf("SC_CLK_TCK")
CPU_TARGET_MS = (1.0, 4.0)  # gateway CPU per request: (routing off, auto)
ADDED_P50_TARGET_MS = (2.0, 6.0)  # added p50 at the lowest concurrency: (off, auto)
LITELLM_RATIO_TARGET = 20.0  # req/s with --workers 2 against LiteLLM's proxy


# --- processes ----------------------------------------------------------------------------


def tree_cpu_s(pid: int) -> float:
    """utime+stime in seconds of `pid` and every live descendant (uvicorn workers)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += int(stats[current][11]) + int(stats[current][12])  # utime, stime
        todo.extend(children.get(current, []))
    return total / TICKS


def _wait_ready(url: str, proc: subprocess.Popen[bytes], logfile: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited with {proc.returncode}:\n{logfile.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready within {timeout} s:\n{logfile.read_text()[-3000:]}")


@contextmanager
def process(
    command: list[str], ready_url: str, logfile: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with logfile.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        _wait_ready(ready_url, proc, logfile, timeout=180)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@contextmanager
def upstream(port: int = 0) -> Iterator[tuple[str, int]]:
    command = [sys.executable, str(HELPER), "upstream", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening "):
            raise SystemExit(f"the fake upstream did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bench_registry(path: Path, upstream_url: str, encoder: str) -> None:
    """examples/registry.yaml with every model served by the fake upstream."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["encoder"] = f"builtin:{encoder}"
    data["providers"] = {"bench": {"kind": "openai", "base_url": f"{upstream_url}/v1"}}
    for model in data["models"].values():
        model.pop("deployments", None)
        model["provider"] = "bench"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


@contextmanager
def gateway(
    registry: Path, workers: int, tmp: Path, port: int | None = None
) -> Iterator[tuple[str, int]]:
    llmroute = Path(sys.executable).parent / "llmroute"
    port = port or free_port()
    command = [str(llmroute if llmroute.exists() else shutil.which("llmroute"))]
    command += ["serve", "--registry", str(registry), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    logfile = tmp / f"llmroute-{registry.stem}-w{workers}.log"
    with process(command, f"{url}/ready", logfile) as proc:
        yield url, proc.pid


@contextmanager
def litellm(
    venv: Path, upstream_url: str, workers: int, tmp: Path, port: int | None = None
) -> Iterator[tuple[str, int]]:
    config = tmp / "litellm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "fake",
                        "litellm_params": {
                            "model": "openai/fake",
                            "api_base": f"{upstream_url}/v1",
                            "api_key": "dummy",
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False, "set_verbose": False},
            }
        )
    )
    port = port or free_port()
    command = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--num_workers", str(workers)]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the cost map
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "DISABLE_ADMIN_UI": "True",
        "NO_PROXY": "*",
        "HTTP_PROXY": "",
        "HTTPS_PROXY": "",
    }
    url = f"http://127.0.0.1:{port}"
    with process(command, f"{url}/health/liveliness", tmp / "litellm.log", env) as proc:
        yield url, proc.pid


# --- measuring ----------------------------------------------------------------------------


def bodies(tmp: Path, model: str, stream: bool = False) -> Path:
    path = tmp / f"bodies-{model}{'-stream' if stream else ''}.jsonl"
    if not path.exists():
        texts = [json.loads(line)["text"] for line in PROMPTS.read_text().splitlines() if line]
        extra = {"stream": True} if stream else {}
        path.write_text(
            "".join(
                json.dumps({"model": model, "messages": [{"role": "user", "content": t}]} | extra)
                + "\n"
                for t in texts
            )
        )
    return path


def measure(
    url: str,
    body_file: Path,
    concurrency: int,
    args: argparse.Namespace,
    pid: int,
    upstream_pid: int,
    headers: tuple[str, ...] = (),
    path: str = "/v1/chat/completions",
) -> dict[str, Any]:
    """One closed-loop run against `url` + `path` (each request with `headers`,
    ``"name: value"``); the CPU time of process tree `pid` (and of the upstream) in the
    measured window."""
    command = [sys.executable, str(HELPER), "load", f"{url}{path}", str(body_file)]
    for header in headers:
        command += ["--header", header]
    command += ["--concurrency", str(concurrency), "--duration", str(args.duration)]
    command += ["--max-requests", str(args.max_requests)]
    command += ["--warmup", str(max(50, 5 * concurrency))]
    if args.stream:
        command.append("--stream")
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        warm = json.loads(proc.stdout.readline() or "{}")
        if not warm.get("warm"):
            raise SystemExit(f"load generator failed against {url}")
        cpu0, up0 = tree_cpu_s(pid), tree_cpu_s(upstream_pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        result: dict[str, Any] = json.loads(proc.stdout.readline() or "{}")
        cpu1, up1 = tree_cpu_s(pid), tree_cpu_s(upstream_pid)
        proc.wait(timeout=args.duration + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = max(int(result.get("completed", 0)), 1)
    result["cpu_ms_per_req"] = (cpu1 - cpu0) * 1e3 / done
    result["upstream_cpu_ms_per_req"] = (up1 - up0) * 1e3 / done
    result["cpu_util"] = (cpu1 - cpu0) / max(result.get("elapsed_s", 1.0), 1e-9)
    result["warm_errors"] = warm.get("warm_errors", 0)
    if result.get("errors") or result["warm_errors"]:
        log(f"  !! {result.get('errors')} errors ({result.get('first_error')}) against {url}")
    return result


def _row(
    label: str, concurrency: int, r: dict[str, Any], direct: dict[str, Any] | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"config": label, "c": concurrency}
    row |= {k: r.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "rps", "completed", "errors")}
    row |= {"cpu_ms_per_req": r["cpu_ms_per_req"], "cpu_util": r["cpu_util"]}
    if direct is not None:
        row["added_p50_ms"] = r["p50_ms"] - direct["p50_ms"]
        row["added_p99_ms"] = r["p99_ms"] - direct["p99_ms"]
    log(
        f"  {label:<28} c={concurrency:<3} p50 {r.get('p50_ms', 0):8.2f} ms  "
        f"p99 {r.get('p99_ms', 0):8.2f} ms  {r['rps']:8.0f} req/s  "
        f"cpu {r['cpu_ms_per_req']:.3f} ms/req  (n={r['completed']}, err={r['errors']})"
    )
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    encoders = args.encoders.split(",")
    top = max(concurrencies)
    out: dict[str, Any] = {"latency": [], "throughput": [], "litellm": None}
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-overhead-"))
    gw_port, ll_port = (args.ports + 1, args.ports + 2) if args.ports else (None, None)
    try:
        with upstream(args.ports or 0) as (up_url, up_pid):
            off, auto = bodies(tmp, POOL_MODEL, args.stream), bodies(tmp, "auto", args.stream)
            direct_body = bodies(tmp, "fake", args.stream)
            for i, encoder in enumerate(encoders):
                registry = tmp / f"registry-{encoder}.yaml"
                bench_registry(registry, up_url, encoder)
                log(f"gateway, 1 worker, encoder builtin:{encoder}")
                with gateway(registry, 1, tmp, gw_port) as (gw_url, gw_pid):
                    for c in concurrencies:
                        direct = measure(up_url, direct_body, c, args, up_pid, up_pid)
                        out["latency"].append(_row("direct upstream", c, direct, None))
                        if i == 0:
                            r = measure(gw_url, off, c, args, gw_pid, up_pid)
                            out["latency"].append(_row("llmroute, routing off", c, r, direct))
                        r = measure(gw_url, auto, c, args, gw_pid, up_pid)
                        label = f"llmroute, auto ({encoder})"
                        out["latency"].append(_row(label, c, r, direct))
            if args.workers > 1:
                loads = [c for c in concurrencies if c > 1] or [top]
                registry = tmp / f"registry-{encoders[0]}.yaml"
                log(f"gateway, {args.workers} workers, encoder builtin:{encoders[0]}")
                directs = {}
                for c in loads:
                    directs[c] = measure(up_url, direct_body, c, args, up_pid, up_pid)
                    out["throughput"].append(_row("direct upstream", c, directs[c], None))
                with gateway(registry, args.workers, tmp, gw_port) as (gw_url, gw_pid):
                    for c in loads:
                        r = measure(gw_url, off, c, args, gw_pid, up_pid)
                        label = f"llmroute --workers {args.workers}, routing off"
                        out["throughput"].append(_row(label, c, r, directs[c]))
                        r = measure(gw_url, auto, c, args, gw_pid, up_pid)
                        label = f"llmroute --workers {args.workers}, auto ({encoders[0]})"
                        out["throughput"].append(_row(label, c, r, directs[c]))
                venv = Path(args.litellm_venv)
                if not (venv / "bin" / "litellm").exists():
                    out["litellm"] = (
                        f"skipped: no LiteLLM venv at {venv} (install: {LITELLM_INSTALL})"
                    )
                    log(out["litellm"])
                else:
                    version = subprocess.run(
                        [
                            str(venv / "bin" / "python"),
                            "-c",
                            "import importlib.metadata as m; print(m.version('litellm'))",
                        ],
                        capture_output=True,
                        text=True,
                        check=False,
                    ).stdout.strip()
                    out["litellm"] = version
                    log(f"LiteLLM {version} proxy, --num_workers {args.workers}")
                    with litellm(venv, up_url, args.workers, tmp, ll_port) as (ll_url, ll_pid):
                        for c in loads:
                            r = measure(ll_url, direct_body, c, args, ll_pid, up_pid)
                            label = f"LiteLLM proxy {version} --num_workers {args.workers}"
                            out["throughput"].append(_row(label, c, r, directs[c]))
    finally:
        if args.keep_logs:
            log(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# --- reporting ----------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def latency_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| config | C | p50 ms | p90 ms | p99 ms | added p50 ms | req/s | CPU ms/req | CPU cores |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['c']} | {_f(r['p50_ms'])} | {_f(r['p90_ms'])} "
            f"| {_f(r['p99_ms'])} | {_f(r.get('added_p50_ms'))} | {_f(r['rps'])} "
            f"| {_f(r['cpu_ms_per_req'], 3)} | {_f(r['cpu_util'])} |"
        )
    return "\n".join(lines)


def throughput_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| server | C | req/s | p50 ms | p99 ms | CPU ms/req | CPU cores | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['c']} | {_f(r['rps'])} | {_f(r['p50_ms'])} "
            f"| {_f(r['p99_ms'])} | {_f(r['cpu_ms_per_req'], 3)} | {_f(r['cpu_util'])} "
            f"| {r['errors']} |"
        )
    return "\n".join(lines)


def max_rps(rows: list[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    """Each config's best req/s over the concurrencies run, and the C it was reached at."""
    best: dict[str, tuple[float, int]] = {}
    for r in rows:
        if r["config"] not in best or r["rps"] > best[r["config"]][0]:
            best[r["config"]] = (r["rps"], r["c"])
    return best


def verdicts(out: dict[str, Any]) -> list[str]:
    lines = []
    lat = [r for r in out["latency"] if r["config"] != "direct upstream"]
    for r in lat:
        if r["c"] != min(x["c"] for x in lat):
            continue
        off = r["config"] == "llmroute, routing off"
        cpu_t = CPU_TARGET_MS[0 if off else 1]
        add_t = ADDED_P50_TARGET_MS[0 if off else 1]
        cpu = max(x["cpu_ms_per_req"] for x in lat if x["config"] == r["config"])
        lines.append(
            f"- {r['config']}: CPU/request ≤ {cpu_t:g} ms "
            f"{'met' if cpu <= cpu_t else 'MISSED'} (worst over C: {cpu:.3f} ms); "
            f"added p50 at C={r['c']} ≤ {add_t:g} ms "
            f"{'met' if r['added_p50_ms'] <= add_t else 'MISSED'} ({r['added_p50_ms']:.2f} ms)"
        )
    best = max_rps(out["throughput"])
    ll = [rps for name, (rps, _) in best.items() if name.startswith("LiteLLM")]
    if ll:
        for name, (rps, _c) in best.items():
            if name.startswith("llmroute"):
                ratio = rps / max(ll[0], 1e-9)
                ok = "met" if ratio >= LITELLM_RATIO_TARGET else "MISSED"
                lines.append(
                    f"- {name}: ≥ {LITELLM_RATIO_TARGET:g}× LiteLLM's req/s {ok} "
                    f"({ratio:.1f}×: {rps:.0f} vs {ll[0]:.0f} req/s, best over C)"
                )
    elif out["litellm"]:
        lines.append(f"- LiteLLM comparison {out['litellm']}")
    return lines


def report(out: dict[str, Any], info: dict[str, Any], markdown: bool) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    parts = []
    streamed = " (streamed requests)" if info.get("stream") else ""
    if markdown:
        parts.append(
            f"## Gateway overhead{streamed}\n\n"
            f"Measured {info['date']} on {info['nproc']} CPUs (`nproc`), {info['cpu']}, "
            f"Python {info['python']}, load average {load} at the end. "
            f"Command: `.venv/bin/python {info['command']}`\n"
        )
    else:
        parts.append(f"{info['date']}, {info['nproc']} CPUs, {info['cpu']}, load {load}{streamed}")
    parts.append(
        "Latency (1 gateway worker; added = gateway p50 − direct p50, same C, same run; "
        "CPU = the gateway's processes, the upstream's on direct rows):\n"
    )
    parts.append(latency_table(out["latency"]))
    if out["throughput"]:
        parts.append("\nMaximum requests/s with several workers, same upstream, same run:\n")
        parts.append(throughput_table(out["throughput"]))
    parts.append("\nMaximum req/s (best over C):\n")
    for name, (rps, c) in max_rps(out["latency"] + out["throughput"]).items():
        workers = "" if "--" in name else ", 1 worker" if name.startswith("llmroute") else ""
        parts.append(f"- {name}{workers}: {rps:.0f} (C={c})")
    parts.append("\nAgainst the targets:\n")
    parts.append("\n".join(verdicts(out)))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated C values")
    parser.add_argument("--encoders", default="minilm-int8,minilm", help="auto runs, builtin:*")
    parser.add_argument("--workers", type=int, default=2, help="workers of the req/s comparison")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap per point")
    parser.add_argument("--litellm-venv", default=str(DEFAULT_LITELLM_VENV))
    parser.add_argument("--stream", action="store_true", help="streamed requests (SSE)")
    parser.add_argument("--ports", type=int, help="upstream, gateway, LiteLLM: FIRST, +1, +2")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--markdown", action="store_true", help="print a section to paste")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = parser.parse_args()
    info = machine()
    if args.stream:
        info["stream"] = True
    out = run(args)
    if args.json:
        print(json.dumps({"machine": info, **out}, indent=1))
    else:
        print(report(out, info, args.markdown))


if __name__ == "__main__":
    main()
