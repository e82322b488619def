"""Cold start of the router tier: import time, the CLI's wall time, `llmroute serve`
until ``/ready``, and the gateway's memory.

    .venv/bin/python benchmarks/bench_startup.py [--repeats 5] [--requests 200]
        [--registry examples/registry.yaml] [--port 18400] [--json]

Each number is the median of ``--repeats`` runs, in fresh processes (the OS's file
cache is warm after the first: these are warm starts, as a pod's restart or a CLI's
second call; the encoder's ONNX export is made once, before the runs, in a temporary
``$LLMROUTE_CACHE_DIR``). The children run without ``PYTHONDONTWRITEBYTECODE``, so
that, as from an installed wheel, modules load from their cached bytecode: with it set
and an editable install, every run compiles llmroute's ~200 modules again (~0.3 s).

* ``import_ms``: ``python -X importtime -c "import M"``, the statement's whole time,
  for ``llmroute`` (the library), ``llmroute.cli`` (what every command imports) and
  ``llmroute.server.app`` (the gateway); and the heaviest packages by their own time
  (summed over their modules) under ``llmroute.cli``, from the last run;
* ``wall_s`` (and ``cpu_s``, user + system, steadier on a shared machine):
  ``llmroute --help``, ``llmroute route -r REGISTRY "write a python
  function"`` (README's first command, without --explain), and ``llmroute serve`` from
  its start until ``GET /ready`` answers 200 (polled every 10 ms);
* ``rss_mb``: the serving process's VmRSS (/proc/PID/status) at ready and after
  ``--requests`` chat requests (``model: auto``, one connection, a few prompts in
  turn) against fake upstreams (tests/support: OpenAI's and Anthropic's protocols;
  the registry is copied to a temporary directory with its providers pointed at them);
* ``heavy``: which of torch, transformers, sklearn, scipy, pandas, onnxruntime,
  starlette and uvicorn each command imported (`-X importtime`'s list, one more run).

No assertions: it prints numbers.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from _common import ROOT, dump_json, log, machine

sys.path.insert(0, str(ROOT / "tests" / "support"))

from fake_anthropic import fake_anthropic
from fake_upstream import fake_upstream

LLMROUTE = str(Path(sys.executable).with_name("llmroute"))  # the venv's console script
MODULES = ("llmroute", "llmroute.cli", "llmroute.server.app")
HEAVY = (
    "torch",
    "transformers",
    "sklearn",
    "scipy",
    "pandas",
    "onnxruntime",
    "starlette",
    "uvicorn",
)
PROMPT = "write a python function"
PROMPTS = (
    "hi there, how are you?",
    "write a python function that merges two sorted lists",
    "translate 'good morning' into French",
    "what is 17 * 23?",
    "summarise this paragraph in one sentence: the cat sat on the mat all day.",
)
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _imports(stderr: str) -> list[tuple[int, int, int, str]]:
    """(self µs, cumulative µs, depth, module) of each line `-X importtime` wrote."""
    rows = []
    for line in stderr.splitlines():
        m = _LINE.match(line)
        if m:
            rows.append((int(m[1]), int(m[2]), len(m[3]) // 2, m[4]))
    return rows


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "llmroute" else parts[0]


def import_ms(
    module: str, repeats: int, env: dict[str, str]
) -> tuple[float, list[tuple[str, float]]]:
    """Median ms of ``import module`` (its top-level imports' cumulative times), and
    the heaviest packages by self time in the last run."""
    took: list[float] = []
    rows: list[tuple[int, int, int, str]] = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        rows = _imports(done.stderr)
        took.append(sum(c for _, c, depth, _ in rows if depth == 0) / 1e3)
    by_package: collections.Counter[str] = collections.Counter()
    for own, _, _, name in rows:
        by_package[_package(name)] += own
    top = [(name, round(us / 1e3, 1)) for name, us in by_package.most_common(12)]
    return statistics.median(took), top


def heavy_of(args: list[str], env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "llmroute", *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    seen = {name.split(".")[0] for _, _, _, name in _imports(done.stderr)}
    return [name for name in HEAVY if name in seen]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of `run`'s child process."""
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = _children_cpu_s(), time.perf_counter()
        run()
        wall.append(time.perf_counter() - t0)
        cpu.append(_children_cpu_s() - c0)
    return statistics.median(wall), statistics.median(cpu)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def served_registry(source: Path, directory: Path) -> Iterator[Path]:
    """`source` copied into `directory`, its providers pointed at fake upstreams."""
    with fake_upstream() as openai, fake_anthropic() as anthropic:
        document = yaml.safe_load(source.read_text())
        for spec in document["providers"].values():
            spec["base_url"] = anthropic.url if spec["kind"] == "anthropic" else openai.url
        path = directory / "registry.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        yield path


def serve_once(
    path: Path, port: int, env: dict[str, str], requests: int, heavy: bool = False
) -> dict[str, Any]:
    """One `llmroute serve`: seconds until /ready, RSS then and after `requests`."""
    url = f"http://127.0.0.1:{port}"
    prefix = [sys.executable, "-X", "importtime", "-m", "llmroute"] if heavy else [LLMROUTE]
    command = [*prefix, "serve", "-r", str(path), "--port", str(port), "--reload-interval", "0"]
    log_path = path.parent / "serve.log"
    with log_path.open("w") as sink:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=path.parent, stdout=sink, stderr=sink)
        try:
            ready = None
            with httpx.Client(base_url=url, timeout=5) as client:
                while time.perf_counter() - t0 < 120 and proc.poll() is None:
                    with contextlib.suppress(httpx.TransportError):
                        if client.get("/ready").status_code == 200:
                            ready = time.perf_counter() - t0
                            break
                    time.sleep(0.01)
                if ready is None:
                    tail = log_path.read_text()[-2000:]
                    raise RuntimeError(f"serve did not become ready: {tail}")
                out: dict[str, Any] = {"ready_s": ready, "rss_ready_mb": rss_mb(proc.pid)}
                for i in range(requests):
                    body = {
                        "model": "auto",
                        "max_tokens": 8,
                        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    }
                    client.post("/v1/chat/completions", json=body).raise_for_status()
                out["rss_after_mb"] = rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if heavy:
        seen = {name.split(".")[0] for _, _, _, name in _imports(log_path.read_text())}
        out["heavy"] = [name for name in HEAVY if name in seen]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--registry", type=Path, default=ROOT / "examples" / "registry.yaml")
    parser.add_argument("--port", type=int, default=18400)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.repeats <= 50 or not 0 <= args.requests <= 10_000:
        parser.error("--repeats: 1 to 50; --requests: 0 to 10000")
    results: dict[str, Any] = {"machine": machine(), "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="llmroute-startup-") as tmp:
        directory = Path(tmp)
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "LLMROUTE_CACHE_DIR": str(directory / "cache"),
            "OPENAI_API_KEY": "sk-fake",
            "ANTHROPIC_API_KEY": "sk-ant-fake",
        }
        route = ["route", "-r", str(args.registry), PROMPT]

        def cli(*command: str) -> Callable[[], None]:
            return lambda: subprocess.run(
                [LLMROUTE, *command], env=env, check=True, capture_output=True
            )

        log("filling the encoder cache (the ONNX export)")
        cli(*route)()
        log("imports")
        results["import_ms"] = {}
        for module in MODULES:
            ms, top = import_ms(module, args.repeats, env)
            results["import_ms"][module] = round(ms, 1)
            if module == "llmroute.cli":
                results["cli_heaviest_self_ms"] = top
        log("CLI")
        results["wall_s"], results["cpu_s"] = {}, {}
        for name, run in (("--help", cli("--help")), ("route", cli(*route))):
            wall, cpu = timed(run, args.repeats)
            results["wall_s"][name], results["cpu_s"][name] = round(wall, 3), round(cpu, 3)
        results["heavy"] = {"--help": heavy_of(["--help"], env), "route": heavy_of(route, env)}
        log("serve")
        with served_registry(args.registry, directory) as path:
            runs = [serve_once(path, args.port, env, args.requests) for _ in range(args.repeats)]
            results["heavy"]["serve"] = serve_once(path, args.port, env, 0, heavy=True)["heavy"]
        results["wall_s"]["serve_ready"] = round(statistics.median(r["ready_s"] for r in runs), 3)
        results["rss_mb"] = {
            "ready": round(statistics.median(r["rss_ready_mb"] for r in runs), 1),
            f"after_{args.requests}": round(statistics.median(r["rss_after_mb"] for r in runs), 1),
        }
        results["serve_runs"] = runs
    if args.json:
        dump_json(results)
        return
    print(f"machine: {results['machine']}")
    for key in ("import_ms", "wall_s", "cpu_s", "rss_mb", "heavy"):
        print(f"{key}: {results[key]}")
    print(f"llmroute.cli, heaviest own time (ms): {results['cli_heaviest_self_ms']}")


if __name__ == "__main__":
    main()
