"""Long prompts past `max_windows`: what a decision costs on examples/registry.yaml
(minilm-int8, the static detector for `extra_windows`), and what the static detector
costs at startup.

    .venv/bin/python benchmarks/bench_extra_windows.py [--json] [--repeat 3]
        [--sizes 12000 48000 96000 384000]
    .venv/bin/python benchmarks/bench_extra_windows.py --startup [--json]

The registry is the one beside the `llmroute` imported (``src/../examples``), so the
same script measures a checkout before the change (PYTHONPATH=OLD/src) and after.
Texts: README.md prose (which the classifiers flag: the request is blocked as an
injection either way, at the cost of scoring every window) and benign meeting minutes
(tests/safety/test_extra_windows.py's), each cut to the sizes; one user message.
Reported per text and size: CPU time (`time.process_time`, all threads) and wall time
of the decision, the fastest of `--repeat`; the windows cut, how many went to the
static detector, what fired. `--startup`: in this fresh process, the wall time and the
resident memory (VmRSS) of building the router, and of loading the static encoder and
detector alone before it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from _common import dump_json, log, machine

import llmroute
from llmroute import Router

SRC_ROOT = Path(llmroute.__file__).resolve().parents[2]
EXAMPLE = SRC_ROOT / "examples" / "registry.yaml"
SIZES = (12_000, 48_000, 96_000, 384_000)
MINUTES = Path(__file__).resolve().parents[1] / "tests" / "safety" / "test_extra_windows.py"


def _minutes() -> str:
    """The benign prose of the tests (read from the file, not imported: no pytest)."""
    source = MINUTES.read_text(encoding="utf-8")
    block = source.split("PROSE = (", 1)[1].split("\n)\n", 1)[0]
    return "".join(line.strip()[1:-1] for line in block.splitlines() if line.strip())


def _cut(text: str, size: int) -> str:
    return (text * (size // len(text) + 1))[:size]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def decisions(sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    router = Router.from_yaml(EXAMPLE)
    router.decide({"messages": [{"role": "user", "content": "hello"}]})  # warm
    texts = {"readme": (SRC_ROOT / "README.md").read_text(encoding="utf-8"), "minutes": _minutes()}
    rows = []
    for kind, source in texts.items():
        for size in sizes:
            body = {"messages": [{"role": "user", "content": _cut(source, size)}]}
            cpu, wall = [], []
            for _ in range(repeat):
                started, clock = time.process_time(), time.perf_counter()
                decision = router.decide(body)
                cpu.append(time.process_time() - started)
                wall.append(time.perf_counter() - clock)
            safety = decision.safety
            assert safety is not None
            rows.append(
                {"text": kind, "chars": size, "cpu_s": round(min(cpu), 3),
                 "wall_s": round(min(wall), 3), "windows": safety.windows,
                 "extra_windows": getattr(safety, "extra_windows", 0),
                 "fired": list(safety.fired)}
            )  # fmt: skip
    return rows


def startup() -> dict[str, Any]:
    from llmroute.encoders.builtin import load_builtin
    from llmroute.safety.injection import builtin_detector_dir, load_detector

    rss0, clock = _rss_mb(), time.perf_counter()
    static = load_builtin("static")
    load_detector(builtin_detector_dir(static.identity), encoder_identity=static.identity)
    static_s, rss1 = time.perf_counter() - clock, _rss_mb()
    return {"static_load_s": round(static_s, 3), "static_rss_mb": round(rss1 - rss0, 1)}


def build() -> dict[str, Any]:
    rss0, clock = _rss_mb(), time.perf_counter()
    Router.from_yaml(EXAMPLE)
    return {
        "build_s": round(time.perf_counter() - clock, 3),
        "build_rss_mb": round(_rss_mb() - rss0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--startup", choices=("router", "static"), default=None)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"machine": machine(), "src": str(SRC_ROOT)}
    if args.startup == "static":
        out.update(startup())
    elif args.startup == "router":
        out.update(build())
    else:
        out["results"] = decisions(args.sizes, args.repeat)
    if args.json:
        dump_json(out)
        return 0
    log(f"machine: {out['machine']}; llmroute from {out['src']}")
    if "results" not in out:
        print(out)
        return 0
    print("| text | chars | CPU s | wall s | windows | static's | fired |")
    print("|---|---|---|---|---|---|---|")
    for r in out["results"]:
        print(
            f"| {r['text']} | {r['chars']:,} | {r['cpu_s']} | {r['wall_s']} | {r['windows']} "
            f"| {r['extra_windows']} | {', '.join(r['fired'])} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
