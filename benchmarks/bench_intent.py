"""Intent-routing accuracy: registries built by `from-examples`, scored on held-out data.

    .venv/bin/python benchmarks/bench_intent.py [--json] [--encoders builtin:minilm ...]
        [--methods linear centroid knn] [--datasets clinc150 banking77] [--shots full 10]

Splits (nothing here is tuned on the rows it reports):
- CLINC150: registries are built from train.jsonl only; `from-examples` chooses the
  threshold by 5-fold cross-validation within train. The numbers are on val.jsonl,
  which no training or calibration step sees.
- Banking77 (train.jsonl only): a fixed stratified 80/20 split (seed 0); the registry is
  built (and cross-validated) from the 80%; numbers on the 20%.

Embeddings go through the on-disk cache (LLMROUTE_CACHE_DIR or the user cache), so reruns
skip the encoder; trained linear heads are cached too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import BANKING, CLINC, ENCODERS, METHODS, dump_json, log, machine, pct

from llmroute.decide import Router
from llmroute.encoders import CachedEncoder, default_cache_dir, load_builtin
from llmroute.encoders.base import Encoder
from llmroute.evaluate.data import LabelledRow, read_labelled, stratified_split
from llmroute.evaluate.from_examples import (
    FromExamplesConfig,
    intent_layer,
    registry_from_examples,
)
from llmroute.evaluate.run import evaluate_router
from llmroute.registry import parse_registry

OOS = "oos"


def load_encoder(spec: str, cache: Path) -> Encoder:
    inner = load_builtin(spec.removeprefix("builtin:"))
    return CachedEncoder(inner, cache / "embeddings")


def route_safe(rows: list[LabelledRow]) -> list[LabelledRow]:
    """Labels as route names: Banking77 has 'reverted_card_payment?' ('?' is not allowed)."""
    return [LabelledRow(r.text, re.sub(r"[^A-Za-z0-9_.-]", "", r.intent)) for r in rows]


def datasets(names: Sequence[str]) -> dict[str, tuple[list[LabelledRow], list[LabelledRow], str]]:
    """name -> (rows to build from, rows to score, description of the scored split)."""
    out = {}
    if "clinc150" in names:
        out["clinc150"] = (
            read_labelled(CLINC / "train.jsonl"),
            read_labelled(CLINC / "val.jsonl"),
            "CLINC150 val.jsonl (built from train.jsonl)",
        )
    if "banking77" in names:
        rows = route_safe(read_labelled(BANKING / "train.jsonl"))
        train, test = stratified_split(rows, 0.2, seed=0)
        out["banking77"] = (train, test, "Banking77 train.jsonl, held-out 20% (seed 0)")
    return out


def closed_set_accuracy(router: Router, encoder: Encoder, rows: Sequence[LabelledRow]) -> float:
    """In-scope rows, best route column wins, no threshold and no out-of-scope class."""
    layer = intent_layer(router)
    routes = {name: i for i, name in enumerate(layer.routes)}
    kept = [r for r in rows if r.intent in routes]
    scores = layer.head.scores(encoder.encode([r.text for r in kept]))[:, : len(routes)]
    gold = np.asarray([routes[r.intent] for r in kept])
    return float((np.argmax(scores, axis=1) == gold).mean())


def run_case(
    build: Sequence[LabelledRow],
    score: Sequence[LabelledRow],
    *,
    spec: str,
    encoder: Encoder,
    method: str,
    shots: int | None,
    cache: Path,
    oos_recall: float,
) -> dict[str, Any]:
    has_oos = any(r.intent == OOS for r in build)
    config = FromExamplesConfig(
        oos_label=OOS if has_oos else None,
        per_route=shots,
        method=method,
        encoder=spec,
        oos_recall=oos_recall,
    )
    t0 = time.perf_counter()
    result = registry_from_examples(build, config, encoder=encoder, cache_dir=cache)
    build_s = time.perf_counter() - t0
    router = Router(
        parse_registry(result.yaml_text, source="bench"), encoder=encoder, cache_dir=cache
    )
    report = evaluate_router(router, score, oos_label=config.oos_label)
    return {
        "encoder": spec,
        "method": method,
        "examples_per_route": "full" if shots is None else shots,
        "routes": result.n_routes,
        "examples": result.n_examples,
        "oos_examples": result.n_out_of_scope_examples,
        "threshold": result.choice.threshold,
        "calibration_split": f"{result.n_calibration} build rows scored out of fold "
        f"({result.folds}-fold cross-validation)",
        "calibration_in_scope_accuracy": result.choice.in_scope_accuracy,
        "calibration_oos_recall": result.choice.oos_recall,
        "n": report.n,
        "accuracy": report.accuracy,
        "in_scope_accuracy": report.in_scope_accuracy,
        "closed_set_accuracy": closed_set_accuracy(router, encoder, score),
        "oos_recall": report.oos_recall,
        "oos_precision": report.oos_precision,
        "oos_recall_target": oos_recall,
        "build_s": round(build_s, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--datasets", nargs="+", default=["clinc150", "banking77"])
    parser.add_argument("--shots", nargs="+", default=["full", "10"], help="'full' or N")
    parser.add_argument(
        "--oos-recall", type=float, default=0.9, help="from-examples calibration target"
    )
    args = parser.parse_args(argv)
    cache = default_cache_dir()
    shots = [None if s == "full" else int(s) for s in args.shots]
    results: list[dict[str, Any]] = []
    data = datasets(args.datasets)
    for spec in args.encoders:
        encoder = load_encoder(spec, cache)
        for name, (build, score, split) in data.items():
            for method in args.methods:
                for n in shots:
                    log(f"{name} {spec} {method} {'full' if n is None else n}/route ...")
                    row = run_case(
                        build,
                        score,
                        spec=spec,
                        encoder=encoder,
                        method=method,
                        shots=n,
                        cache=cache,
                        oos_recall=args.oos_recall,
                    )
                    row.update(dataset=name, split=split)
                    results.append(row)
                    log(json.dumps(row))
                    if not args.json:
                        print_row(row)
    if args.json:
        dump_json({"machine": machine(), "results": results})
    return 0


def print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['dataset']:<10} {row['encoder']:<15} {row['method']:<8} "
        f"{row['examples_per_route']!s:>4}/route  in-scope {pct(row['in_scope_accuracy'])}  "
        f"closed-set {pct(row['closed_set_accuracy'])}  oos recall {pct(row['oos_recall'])}  "
        f"oos precision {pct(row['oos_precision'])}  accuracy {pct(row['accuracy'])}  "
        f"threshold {row['threshold']:.3f}  (calibration: in-scope "
        f"{pct(row['calibration_in_scope_accuracy'])}, oos recall "
        f"{pct(row['calibration_oos_recall'])})  build {row['build_s']} s",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
