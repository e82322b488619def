"""What the guard layers (safety, reasoning gate) add to a decision, on top of the shared
request embedding.

    .venv/bin/python benchmarks/bench_guards.py [--json] [--requests 600]
        [--encoders builtin:static builtin:minilm-int8]

Registry: examples/registry.yaml (its `safety` and `reasoning` sections as shipped) with
the encoder swapped. Prompts: the same mix as bench_decision.py (two thirds short
CLINC150 requests, one third long MMLU prompts). Each layer's cost is the `elapsed_us` of
its signal in the Decision: the pipeline measures every layer and charges encoder calls
(the shared embedding, a long request's extra windows) to the encoder, not to the layer,
so the number is the layer's own work. Requests whose scanned text needed more than one
window are reported apart (the target excludes windows), with their extra encoder time.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from _common import ROOT, dump_json, log, machine, percentiles
from bench_decision import prompts

from llmroute.decide import Router
from llmroute.encoders import load_builtin
from llmroute.registry import load_registry

EXAMPLE = ROOT / "examples" / "registry.yaml"
GUARDS = ("safety", "reasoning")


def _router(encoder: str) -> Router:
    loaded = load_registry(EXAMPLE)
    spec = {"kind": "builtin", "name": encoder.removeprefix("builtin:")}
    dumped = loaded.registry.model_dump(exclude_unset=True)
    registry = loaded.registry.model_validate({**dumped, "encoder": spec})
    from llmroute.registry.loader import LoadedRegistry

    swapped = LoadedRegistry(registry, loaded.version, loaded.source, loaded.base_dir)
    return Router(swapped, encoder=load_builtin(encoder))


def measure(encoder: str, texts: list[str]) -> dict[str, Any]:
    router = _router(encoder)
    for text in texts[:20]:
        router.decide(text)  # warm-up
    costs: dict[str, list[float]] = {g: [] for g in GUARDS}
    windowed: list[float] = []
    windowed_encode: list[float] = []
    total: list[float] = []
    for text in texts:
        decision = router.decide(text)
        total.append(decision.total_us)
        multi = decision.safety is not None and decision.safety.windows > 1
        for signal in decision.signals:
            if signal.layer in costs:
                if signal.layer == "safety" and multi:
                    windowed.append(signal.elapsed_us)
                else:
                    costs[signal.layer].append(signal.elapsed_us)
        if multi:
            windowed_encode.append(decision.encode_us)
    out: dict[str, Any] = {"encoder": encoder, "requests": len(texts)}
    for name, values in costs.items():
        if values:
            out[name] = percentiles(values)
    if windowed:
        out["safety_multi_window"] = percentiles(windowed)
        out["multi_window_encode"] = percentiles(windowed_encode)
        out["multi_window_requests"] = len(windowed)
    out["decision_total"] = percentiles(total)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--encoders", nargs="+", default=["builtin:static", "builtin:minilm-int8"])
    args = parser.parse_args(argv)
    texts = prompts(args.requests)
    started = time.time()
    results = [measure(e, texts) for e in args.encoders]
    if args.json:
        dump_json({"machine": machine(), "results": results})
        return 0
    log(f"machine: {machine()}  ({time.time() - started:.0f} s)")
    print("| encoder | layer | requests | p50 µs | p90 µs | p99 µs |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for key, label in (
            ("safety", "safety (one window)"),
            ("safety_multi_window", "safety (several windows; encoder excluded)"),
            ("multi_window_encode", "encoder, several-window requests"),
            ("reasoning", "reasoning gate"),
            ("decision_total", "whole decision"),
        ):
            if key in r:
                p = r[key]
                print(
                    f"| {r['encoder']} | {label} | {p['n']} | {p['p50_us']:.0f} "
                    f"| {p['p90_us']:.0f} | {p['p99_us']:.0f} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
