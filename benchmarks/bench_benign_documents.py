"""Benign technical documents (API docs, source code) through the safety
layer: how many excerpts and windows the injection classifier flags, per source, split
and encoder.

    python benchmarks/bench_benign_documents.py [--splits validation] [--artifacts DIR]
        [--encoders static minilm-int8] [--json]

Data: benchmarks/data/benign_technical.jsonl, built by `build_benign_technical.py` from
local files (Node.js API docs, MIT; Python 3.11 standard library, PSF-2.0): 272
excerpts of at most 1,700 characters (two windows of the default 1,000 / 750), each
row's ``split`` fixed by a hash of its file before anything was scored (licence texts
were measured once from the local files, docs/benchmarks.md, and are not included).
``train`` rows may be learnt from (`train_safety_artifacts.py --benign-extra`),
``validation`` is what a candidate is judged on, ``test`` is read once.

Each excerpt is sent through `Router.decide` with examples/registry.yaml (profile
``standard``: ``injection: block``) and the given encoder, as the user turn: whether the
layer flagged it (the classifier or an attack rule) and blocked it. Its windows
(`llmroute.safety.windows`, the artifact's settings, the ones the layer uses) are also
scored one by one by the detector: how many reach its threshold. ``head`` counts the
excerpts that start a file (a module docstring, a licence header, a document's title).
`--artifacts DIR` scores DIR/injection-<encoder> instead of the shipped artifacts;
`--thresholds 0.5 0.6` also counts the excerpts whose worst window reaches each of those
(what a profile's raised ``safety.injection.threshold`` would flag, rules aside).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, dump_json, example_registry, machine, split_rows

from llmroute.decide import Router
from llmroute.encoders.builtin import load_builtin
from llmroute.safety.injection import builtin_detector_dir, load_detector
from llmroute.safety.windows import windows

DATA = ROOT / "benchmarks" / "data" / "benign_technical.jsonl"
ENCODERS = ("static", "minilm-int8")
SPLITS = ("train", "validation", "test")
KEYS = (
    "docs",
    "flagged",
    "blocked",
    "rule",
    "heads",
    "heads_flagged",
    "windows",
    "windows_flagged",
)


def bench(
    name: str, docs: list[dict[str, Any]], artifacts: Path | None, thresholds: list[float]
) -> dict[str, Any]:
    encoder = load_builtin(name)
    folder = (
        builtin_detector_dir(encoder.identity)
        if artifacts is None
        else artifacts.resolve() / f"injection-{name}"
    )
    detector = load_detector(folder, encoder_identity=encoder.identity)
    with tempfile.TemporaryDirectory() as tmp:
        router = Router.from_yaml(
            example_registry(name, None if artifacts is None else folder, Path(tmp))
        )
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KEYS, 0))
    for doc in docs:
        decision = router.decide(
            {"model": "auto", "messages": [{"role": "user", "content": doc["text"]}]}
        )
        safety = decision.safety
        assert safety is not None
        rule = any(f.startswith("rule:") for f in safety.fired)
        flagged = "injection" in safety.fired or rule
        found, _ = windows(doc["text"], *detector.window)
        scores = detector.score(found, encoder.encode(found))
        head = doc["offset"] == 0
        for key in (f"{doc['source']}/{doc['split']}", f"all/{doc['split']}"):
            line = out[key]
            line["docs"] += 1
            line["flagged"] += flagged
            line["blocked"] += decision.blocked
            line["rule"] += rule
            line["heads"] += head
            line["heads_flagged"] += head and flagged
            line["windows"] += len(found)
            line["windows_flagged"] += int(np.sum(scores >= detector.threshold))
            for t in thresholds:
                line[f"worst>={t}"] = line.get(f"worst>={t}", 0) + int(scores.max() >= t)
    return {"encoder": encoder.identity, "threshold": detector.threshold, "sources": out}


def rate(hit: int, n: int) -> str:
    return f"{hit:3}/{n:<3} {hit / n:6.1%}" if n else "    -       "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", nargs="+", default=["validation"], choices=SPLITS)
    parser.add_argument("--artifacts", type=Path, help="score DIR/injection-<encoder>")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument("--thresholds", nargs="*", type=float, default=[], help="also count these")
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    args = parser.parse_args()
    docs = split_rows(DATA, args.splits)
    results = {name: bench(name, docs, args.artifacts, args.thresholds) for name in args.encoders}
    if args.json:
        dump_json({"machine": machine(), "splits": args.splits, "results": results})
        return
    for name, result in results.items():
        print(f"\n{name} ({result['encoder']}), threshold {result['threshold']:.4f}")
        print(
            f"{'source/split':26} {'excerpts flagged':>17} {'blocked':>7} {'rule':>4}"
            f" {'heads flagged':>17} {'windows flagged':>17}"
        )
        for key in sorted(result["sources"]):
            s = result["sources"][key]
            print(
                f"{key:26} {rate(s['flagged'], s['docs']):>17} {s['blocked']:7} {s['rule']:4}"
                f" {rate(s['heads_flagged'], s['heads']):>17}"
                f" {rate(s['windows_flagged'], s['windows']):>17}"
            )
            for t in args.thresholds:
                print(f"{'':26} worst window >= {t}: {rate(s[f'worst>={t}'], s['docs'])}")


if __name__ == "__main__":
    sys.exit(main())
