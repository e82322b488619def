"""Rebuild the reasoning gate's shipped scorers and print validation and test numbers.

    python benchmarks/train_reasoning_artifacts.py [--data /work/shared/data] [--seed 0]

Labels (docs/reasoning.md, "Labels"), built from the development data:

- ``reasoning``: every GSM8K problem (multi-step arithmetic word problems), and MMLU
  questions from the subjects in `REASONING_SUBJECTS` (mathematics, statistics,
  physics, chemistry, computer science, formal logic, machine learning: questions that
  are worked out rather than recalled);
- ``direct``: MMLU questions from the factual-recall subjects in `DIRECT_SUBJECTS`
  (anatomy, geography, history of religions, marketing, nutrition, ...), and everyday
  requests: in-scope CLINC150 training utterances (one in ten, by hash) and banking77
  training utterances (one in ten, by hash).

Other MMLU subjects (law, medicine, ethics, economics, psychology, reading passages of
history) are left out: they mix recall and reasoning, so either label would be noise.
Rows are split 60/20/20 by group (MMLU questions sharing a passage stay together); the
regularisation and the threshold are chosen on validation; the test split is scored
once, here, and recorded in the artifact. Writes the labelled file too (``--labels``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from llmroute.difficulty.calibration import seen_prompts
from llmroute.encoders import CachedEncoder, default_cache_dir, load_builtin
from llmroute.layers.base import DecisionContext
from llmroute.layers.reasoning import ReasoningLayer
from llmroute.reasoning import (
    ReasoningData,
    binary_metrics,
    builtin_scorer_dir,
    load_scorer,
    read_reasoning,
    save_scorer,
    split_reasoning,
)
from llmroute.reasoning.artifact import BUILTIN_DIR, ReasoningScorer
from llmroute.reasoning.train import embed_texts, fit_on_data
from llmroute.request import RouteRequest

REASONING_SUBJECTS = (
    "abstract_algebra",
    "college_chemistry",
    "college_computer_science",
    "college_mathematics",
    "college_physics",
    "elementary_mathematics",
    "formal_logic",
    "high_school_chemistry",
    "high_school_computer_science",
    "high_school_mathematics",
    "high_school_physics",
    "high_school_statistics",
    "machine_learning",
)
DIRECT_SUBJECTS = (
    "anatomy",
    "global_facts",
    "high_school_geography",
    "high_school_government_and_politics",
    "human_aging",
    "human_sexuality",
    "management",
    "marketing",
    "miscellaneous",
    "nutrition",
    "prehistory",
    "public_relations",
    "sociology",
    "us_foreign_policy",
    "virology",
    "world_religions",
)
EVERYDAY_SHARE = 10  # keep one utterance in this many (CLINC150, banking77)
ENCODERS = ("static", "minilm-int8")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _kept(text: str) -> bool:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:4], "little") % EVERYDAY_SHARE == 0


def build_labels(data: Path) -> list[dict[str, str]]:
    """The labelled rows (text, label, source), in a fixed order."""
    rows: list[dict[str, str]] = []
    for row in _jsonl(data / "gsm8k" / "gsm8k_dev.jsonl"):
        rows.append({"text": row["prompt"], "label": "reasoning", "source": "gsm8k"})
    for row in _jsonl(data / "mmlu" / "mmlu_dev.jsonl"):
        if row["domain"] in REASONING_SUBJECTS:
            label = "reasoning"
        elif row["domain"] in DIRECT_SUBJECTS:
            label = "direct"
        else:
            continue
        rows.append({"text": row["prompt"], "label": label, "source": f"mmlu:{row['domain']}"})
    for row in _jsonl(data / "clinc150" / "train.jsonl"):
        if row["intent"] != "oos" and _kept(row["text"]):
            rows.append({"text": row["text"], "label": "direct", "source": "clinc150"})
    for row in _jsonl(data / "banking77" / "train.jsonl"):
        if _kept(row["text"]):
            rows.append({"text": row["text"], "label": "direct", "source": "banking77"})
    return rows


def _by_source(scorer: ReasoningScorer, x: Any, labels: Any, sources: list[str]) -> dict[str, Any]:
    """Share of each source family flagged on the test split (a sanity check)."""
    out: dict[str, Any] = {}
    scores = scorer.scores(x)
    families = sorted({s.split(":")[0] for s in sources})
    for family in families:
        mask = [s.split(":")[0] == family for s in sources]
        flagged = scores[mask] >= scorer.threshold
        out[family] = {"rows": int(sum(mask)), "flagged": round(float(flagged.mean()), 4)}
    return out


def gate_latency(data: ReasoningData, name: str, rows: int = 2000) -> dict[str, float]:
    """The gate's own cost per request (triggers, parts, length, scorer), the embedding
    already computed: p50 / p99 in µs over `rows` requests, each timed 5 times."""
    encoder = CachedEncoder(load_builtin(name), default_cache_dir() / "embeddings")
    directory, expected = builtin_scorer_dir(encoder.identity)
    layer = ReasoningLayer(scorer=load_scorer(directory, encoder_identity=expected))
    texts = data.texts[:: max(1, len(data) // rows)][:rows]
    vectors = embed_texts(encoder, texts)
    timings = []
    for text, vector in zip(texts, vectors, strict=True):
        request = RouteRequest(text)
        for _ in range(5):
            ctx = DecisionContext(request, encoder.encode, vector)
            t0 = time.perf_counter_ns()
            layer.evaluate(ctx)
            timings.append((time.perf_counter_ns() - t0) / 1000.0)
    return {
        "p50_us": round(float(np.percentile(timings, 50)), 1),
        "p99_us": round(float(np.percentile(timings, 99)), 1),
        "requests": len(texts),
    }


def fp32_alias_check(data: ReasoningData, seed: int) -> dict[str, dict[str, float]]:
    """`builtin:minilm` (fp32) uses the int8 scorer: its validation numbers on int8 and on
    fp32 embeddings, at the int8 threshold (validation only: the test split is not
    touched again)."""
    directory, expected = builtin_scorer_dir(load_builtin("minilm-int8").identity)
    scorer = load_scorer(directory, encoder_identity=expected)
    _, val, _ = split_reasoning(data, seed=seed)
    texts = [data.texts[i] for i in val]
    out = {}
    for name in ("minilm-int8", "minilm"):
        encoder = CachedEncoder(load_builtin(name), default_cache_dir() / "embeddings")
        scores = scorer.scores(embed_texts(encoder, texts))
        out[name] = binary_metrics(scores, data.labels[val], scorer.threshold)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--labels", type=Path, default=Path("build/reasoning_labels.jsonl"))
    parser.add_argument("--out", type=Path, default=BUILTIN_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoders", nargs="*", default=list(ENCODERS))
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only time the gate with the shipped scorers (no training, no test numbers)",
    )
    parser.add_argument(
        "--fp32-check",
        action="store_true",
        help="only score the validation split with the int8 scorer on fp32 MiniLM vectors",
    )
    args = parser.parse_args()

    rows = build_labels(args.data)
    args.labels.parent.mkdir(parents=True, exist_ok=True)
    args.labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = read_reasoning(args.labels)
    positives = int(data.labels.sum())
    print(f"labels: {len(data)} rows ({positives} reasoning, {len(data) - positives} direct)")
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    if args.fp32_check:
        for name, metrics in fp32_alias_check(data, args.seed).items():
            print(f"int8 scorer on builtin:{name} vectors, validation: {metrics}")
        return
    if args.latency_only:
        for name in args.encoders:
            print(f"gate cost on top of the embedding, builtin:{name}: {gate_latency(data, name)}")
        return
    for name in args.encoders:
        encoder = CachedEncoder(load_builtin(name), default_cache_dir() / "embeddings")
        started = time.perf_counter()
        fitted = fit_on_data(data, encoder, seed=args.seed)
        seconds = time.perf_counter() - started
        trained = fitted.trained
        scorer = trained.scorer
        test_labels = data.labels[fitted.test]
        test = binary_metrics(
            scorer.scores(fitted.embeddings[fitted.test]), test_labels, scorer.threshold
        )
        sources = [data.sources[i] or "" for i in fitted.test]
        per_source = _by_source(scorer, fitted.embeddings[fitted.test], test_labels, sources)
        trained_on = {
            "file": "reasoning_labels.jsonl (benchmarks/train_reasoning_artifacts.py)",
            "sha256": hashlib.sha256(args.labels.read_bytes()).hexdigest(),
            "rows": {"train": len(fitted.train), "val": len(fitted.val), "test": len(fitted.test)},
            "split": {"seed": args.seed, "fractions": [0.6, 0.2, 0.2], "by": "group"},
            "encoder_spec": f"builtin:{name}",
            "seen_prompts": seen_prompts([data.texts[i] for i in (*fitted.train, *fitted.val)]),
        }
        metrics = {
            "validation": trained.validation,
            "test": test,
            "test_by_source": per_source,
            "c_sweep": trained.sweep,
        }
        save_scorer(
            scorer, args.out / name, hyper=trained.hyper, trained_on=trained_on, metrics=metrics
        )
        print(
            f"\n== builtin:{name} ({seconds:.1f}s, C={trained.hyper['c']:g}, "
            f"threshold {scorer.threshold:.4f})"
        )
        print(f"  C sweep (val AUC): {trained.sweep}")
        print(f"  validation: {trained.validation}")
        print(f"  test (once): {test}")
        print(f"  test flagged by source: {per_source}")
        print(f"  written to {args.out / name}")
        print(f"  gate cost on top of the embedding: {gate_latency(data, name)}")


if __name__ == "__main__":
    main()
