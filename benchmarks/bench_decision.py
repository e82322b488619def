"""Batch-1 decision latency: `Router.decide` on realistic prompts, split into encoder and
scoring time, by prompt length; plus intent scoring alone for each head method.

    .venv/bin/python benchmarks/bench_decision.py [--json] [--requests 600]
        [--encoders builtin:minilm builtin:static] [--registries example clinc150]

Prompts: CLINC150 val.jsonl texts (short chat requests) mixed with MMLU dev prompts (long,
multiple choice), seeded sample, shuffled. Each request is timed with perf_counter_ns
around `router.decide` after a warm-up; `encode` is `decision.encode_us`, `scoring` is
`decision.total_us - decision.encode_us` (every layer plus the pipeline's bookkeeping).

Registries: examples/registry.yaml, and a 150-route CLINC150 registry (linear head)
built by `from-examples` from train+val (≈96 examples per route plus out-of-scope
examples; a latency fixture, so no accuracy is claimed for it).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import CLINC, ENCODERS, METHODS, MMLU, ROOT, dump_json, log, machine, percentiles

from llmroute.decide import Router
from llmroute.encoders import default_cache_dir, load_builtin
from llmroute.encoders.base import Encoder
from llmroute.evaluate.data import read_labelled
from llmroute.evaluate.from_examples import FromExamplesConfig, registry_from_examples
from llmroute.layers.intent import IntentLayer
from llmroute.registry import LoadedRegistry, load_registry, parse_registry
from llmroute.scoring.heads import CentroidHead, IntentHead, KnnHead, LinearHead
from llmroute.scoring.logreg import SoftmaxModel

EXAMPLE = ROOT / "examples" / "registry.yaml"
BUCKETS = ((16, "<=16 words"), (64, "17-64 words"), (256, "65-256 words"), (10**9, ">256 words"))


def prompts(n: int, seed: int = 0) -> list[str]:
    """Two thirds short CLINC150 requests, one third long MMLU prompts, shuffled."""
    rng = random.Random(seed)
    short = [r.text for r in read_labelled(CLINC / "val.jsonl")]
    with MMLU.open(encoding="utf-8") as handle:
        long = [json.loads(line)["prompt"] for line in handle if line.strip()]
    chosen = rng.sample(short, (2 * n) // 3) + rng.sample(long, n - (2 * n) // 3)
    rng.shuffle(chosen)
    return chosen


def bucket(text: str) -> str:
    words = len(text.split())
    return next(label for limit, label in BUCKETS if words <= limit)


def clinc_registry(cache: Path, encoder: Encoder, spec: str) -> LoadedRegistry:
    rows = read_labelled(CLINC / "train.jsonl") + read_labelled(CLINC / "val.jsonl")
    config = FromExamplesConfig(oos_label="oos", encoder=spec)
    result = registry_from_examples(rows, config, encoder=encoder, cache_dir=cache)
    return parse_registry(result.yaml_text, source="clinc150-from-examples")


def time_decisions(router: Router, texts: Sequence[str], warmup: int) -> dict[str, Any]:
    for text in texts[:warmup]:
        router.decide(text)
    wall, encode, scoring = [], [], []
    by_bucket: dict[str, list[float]] = {label: [] for _, label in BUCKETS}
    for text in texts:
        t0 = time.perf_counter_ns()
        decision = router.decide(text)
        elapsed = (time.perf_counter_ns() - t0) / 1000.0
        wall.append(elapsed)
        encode.append(decision.encode_us)
        scoring.append(decision.total_us - decision.encode_us)
        by_bucket[bucket(text)].append(elapsed)
    return {
        "decide_wall": percentiles(wall),
        "encode": percentiles(encode),
        "scoring": percentiles(scoring),
        "by_length": {label: percentiles(v) for label, v in by_bucket.items() if v},
    }


def synthetic_heads(dim: int, routes: int, per_route: int) -> dict[str, IntentHead]:
    """Heads of the right shapes on random unit vectors: cost does not depend on values."""
    rng = np.random.default_rng(0)
    examples = rng.standard_normal((routes * per_route, dim)).astype(np.float32)
    examples /= np.linalg.norm(examples, axis=1, keepdims=True)
    labels = np.repeat(np.arange(routes), per_route).astype(np.intp)
    weights = rng.standard_normal((dim, routes)).astype(np.float32)
    return {
        "linear": LinearHead(SoftmaxModel(weights, np.zeros(routes, dtype=np.float32))),
        "centroid": CentroidHead(examples, labels, routes),
        "knn": KnnHead(examples, labels, routes, k=5),
    }


def time_scoring(dim: int, routes: int, per_route: int, iters: int) -> dict[str, Any]:
    """`IntentLayer.judge(head.scores(vector))` at batch 1, for each head method."""
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((iters, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    out: dict[str, Any] = {}
    for method, head in synthetic_heads(dim, routes, per_route).items():
        names = [f"r{i}" for i in range(routes)]
        layer = IntentLayer(head, names, ["m"] * routes, [0.5] * routes)
        for q in queries[:100]:
            layer.judge(head.scores(q))
        samples = []
        for q in queries:
            t0 = time.perf_counter_ns()
            layer.judge(head.scores(q))
            samples.append((time.perf_counter_ns() - t0) / 1000.0)
        out[method] = percentiles(samples)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    parser.add_argument("--registries", nargs="+", default=["example", "clinc150"])
    parser.add_argument("--scoring-iters", type=int, default=5000)
    args = parser.parse_args(argv)
    cache = default_cache_dir()
    texts = prompts(args.requests)
    results: list[dict[str, Any]] = []
    scoring: dict[str, Any] = {}
    for spec in args.encoders:
        encoder = load_builtin(spec.removeprefix("builtin:"))
        for name in args.registries:
            if name == "example" and not EXAMPLE.exists():
                log(f"skipping the example registry: {EXAMPLE} does not exist")
                continue
            log(f"{name} registry, {spec}: building ...")
            loaded = (
                load_registry(EXAMPLE)
                if name == "example"
                else clinc_registry(cache, encoder, spec)
            )
            router = Router(loaded, encoder=encoder, cache_dir=cache)
            log(f"{name} registry, {spec}: timing {len(texts)} decisions ...")
            row = {"registry": name, "encoder": spec, "routes": len(loaded.registry.routes)}
            row.update(time_decisions(router, texts, args.warmup))
            results.append(row)
            if not args.json:
                print_row(row)
        scoring[spec] = time_scoring(encoder.dim, 150, 100, args.scoring_iters)
        if not args.json:
            for method in METHODS:
                s = scoring[spec][method]
                print(
                    f"scoring alone, 150 routes x 100 examples, dim {encoder.dim}, {method:<8} "
                    f"p50 {s['p50_us']:8.1f} us  p99 {s['p99_us']:8.1f} us"
                )
    if args.json:
        dump_json(
            {
                "machine": machine(),
                "requests": len(texts),
                "decisions": results,
                "scoring_alone_150x100": scoring,
            }
        )
    return 0


def print_row(row: dict[str, Any]) -> None:
    def fmt(p: dict[str, Any]) -> str:
        return f"p50 {p['p50_us'] / 1000:7.3f} ms  p99 {p['p99_us'] / 1000:7.3f} ms"

    print(
        f"{row['registry']} ({row['routes']} routes), {row['encoder']}, n={row['decide_wall']['n']}"
    )
    print(f"  decide (wall) {fmt(row['decide_wall'])}")
    print(f"  encode        {fmt(row['encode'])}")
    print(f"  scoring       {fmt(row['scoring'])}")
    for label, p in row["by_length"].items():
        print(f"  {label:<14}{fmt(p)}  (n={p['n']})")


if __name__ == "__main__":
    sys.exit(main())
