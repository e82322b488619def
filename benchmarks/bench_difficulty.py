"""Difficulty (win-rate) routing on MMLU and GSM8K: every router kind and encoder.

    .venv/bin/python benchmarks/bench_difficulty.py [--json | --markdown]
    .venv/bin/python benchmarks/bench_difficulty.py --compare-recipes [--json]
    .venv/bin/python benchmarks/bench_difficulty.py --timing [--json]
    .venv/bin/python benchmarks/bench_difficulty.py --nested [--json]

Split (nothing is tuned on the rows it reports as test): `split(data, seed=0)`, 60/20/20,
stratified by the weak/strong outcome, MMLU questions sharing a reading passage kept on
one side. Each (kind, encoder) is trained as `llmroute train difficulty` trains it
(`train_router`): hyper-parameters chosen by 10-fold group cross-validation over train +
validation, then refitted on those rows. Per dataset the best (kind, encoder) by
cross-validated APGR is selected, and only it and the default router (DEFAULT_ROUTER on
builtin:static) are scored on test, once.

Transfer: the routers trained (and selected) on MMLU train + validation, scored on all of
GSM8K (no GSM8K row is seen before).

--compare-recipes: the default router trained with the cross-validated recipe against
the hold-out one (fit on train, choose on validation), on five re-splits of the seed-0
train + validation rows (60/20/20 inside them, seeds 1-5): the test side is not read.

--nested: the default recipe's APGR under outer 5-fold group cross-validation over every
row of each file, twice: a less noisy estimate than one test split (GSM8K's has 135 rows),
for a recipe that is already fixed; it selects nothing.

Timing: `train_s` is `train_router` for the default router on MMLU with the embedding
cache warm (the cold first embedding of the file is excluded); scoring p50 is one
`router.score` call per request with the embedding already computed.

Embeddings go through the on-disk cache (LLMROUTE_CACHE_DIR or the user cache).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, dump_json, log, machine, percentiles

from llmroute.difficulty import (
    DEFAULT_ROUTER,
    LabelledPrompts,
    quality_curve,
    read_labels,
    report,
    split,
    train_router,
)
from llmroute.difficulty.data import cv_folds
from llmroute.difficulty.routers import DifficultyRouter
from llmroute.difficulty.train import embed
from llmroute.encoders import CachedEncoder, default_cache_dir, load_builtin
from llmroute.encoders.base import Encoder

DATASETS = {
    "mmlu": DATA / "mmlu" / "mmlu_dev.jsonl",
    "gsm8k": DATA / "gsm8k" / "gsm8k_dev.jsonl",
}
KINDS = ("random", "linear", "knn", "mf", "mlp")
ENCODERS = ("builtin:static", "builtin:minilm-int8")
DEFAULT_ENCODER = "builtin:static"  # the CLI's --encoder default
SEED = 0
LATENCY_REQUESTS, LATENCY_WARMUP = 1000, 100

# RouteLLM (Ong et al., 2024), published best routers, GPT-4 vs Mixtral on their test sets.
ROUTELLM = {
    "mmlu": "random 0.500; best 0.603 (SW ranking, MMLU-labelled augmentation); "
    "CPT(50%) 35.4%, CPT(80%) 70.3%",
    "gsm8k": "best APGR 0.622",
}


def load_encoder(spec: str) -> Encoder:
    """Exactly as `llmroute train difficulty` builds it, so the embedding cache is hit."""
    return CachedEncoder(
        load_builtin(spec.removeprefix("builtin:")), default_cache_dir() / "embeddings"
    )


def summary(name: str, scores: np.ndarray, data: LabelledPrompts) -> dict[str, Any]:
    curve = quality_curve(name, scores, data.weak, data.strong)
    return report(curve, data.weak, data.strong)


def score_rows(router: DifficultyRouter, encoder: Encoder, data: LabelledPrompts) -> np.ndarray:
    return router.score(embed(encoder, data.prompts), data.prompts)


def scoring_p50(router: DifficultyRouter, vectors: np.ndarray, texts: Sequence[str]) -> float:
    """p50 microseconds of one `score` call on a single request's embedding and text."""
    times = []
    for i in range(LATENCY_WARMUP + LATENCY_REQUESTS):
        j = i % len(texts)
        row, text = vectors[j : j + 1], [texts[j]]
        t0 = time.perf_counter_ns()
        router.score(row, text)
        times.append((time.perf_counter_ns() - t0) / 1000.0)
    return percentiles(times[LATENCY_WARMUP:])["p50_us"]


def run() -> dict[str, Any]:
    encoders = {spec: load_encoder(spec) for spec in ENCODERS}
    data = {name: read_labels(path) for name, path in DATASETS.items()}
    results: dict[str, Any] = {"selection": [], "test": [], "transfer": [], "scoring": []}
    trained: dict[tuple[str, str, str], DifficultyRouter] = {}
    splits = {}
    for name, labelled in data.items():
        train_idx, val_idx, test_idx = split(labelled, seed=SEED)
        splits[name] = (train_idx, val_idx, test_idx)
        results.setdefault("rows", {})[name] = {
            "train": len(train_idx),
            "val": len(val_idx),
            "test": len(test_idx),
        }
        for spec, encoder in encoders.items():
            for kind in KINDS:
                log(f"{name} {spec} {kind} ...")
                router, metrics = train_router(
                    kind, labelled, encoder, train_idx=train_idx, val_idx=val_idx, seed=SEED
                )
                trained[name, spec, kind] = router
                results["selection"].append(
                    {
                        "dataset": name,
                        "encoder": spec,
                        "kind": kind,
                        "apgr": metrics["apgr"],
                        "fold_sd": metrics["apgr_fold_sd"],
                        "folds": metrics["folds"],
                        "hyper": metrics["hyper"],
                        "fit_s": metrics["fit_seconds"],
                    }
                )
    # Selection by cross-validated APGR only, then test once for the selected and default.
    for name, labelled in data.items():
        rows = [r for r in results["selection"] if r["dataset"] == name and r["kind"] != "random"]
        best = max(rows, key=lambda r: r["apgr"])
        choices = [("selected", best["kind"], best["encoder"])]
        choices.append(("default", DEFAULT_ROUTER, DEFAULT_ENCODER))
        test = labelled.subset(splits[name][2])
        for role, kind, spec in choices:
            router = trained[name, spec, kind]
            row = summary(kind, score_rows(router, encoders[spec], test), test)
            rnd = trained[name, spec, "random"]
            hashed = summary("random", score_rows(rnd, encoders[spec], test), test)
            results["test"].append(
                {"dataset": name, "role": role, "kind": kind, "encoder": spec}
                | {k: row[k] for k in ("n", "weak_accuracy", "strong_accuracy", "apgr")}
                | {k: row[k] for k in ("cpt50", "cpt80")}
                | {"random_expected": row["random"], "random_hashed": _three(hashed)}
                | {"oracle": row["oracle"]}
            )
    # Transfer: MMLU-trained routers on all of GSM8K.
    gsm8k = data["gsm8k"]
    for spec, encoder in encoders.items():
        for kind in KINDS:
            row = summary(kind, score_rows(trained["mmlu", spec, kind], encoder, gsm8k), gsm8k)
            results["transfer"].append(
                {"encoder": spec, "kind": kind, "n": row["n"]}
                | _three(row)
                | {"oracle": row["oracle"], "random_expected": row["random"]}
            )
    results |= timing(data["mmlu"], splits["mmlu"], encoders, trained)
    return results


RESPLITS = (1, 2, 3, 4, 5)
SHARES = (0.1, 0.3, 0.5, 0.7, 0.9)


def compare_recipes() -> dict[str, Any]:
    """Cross-validated vs hold-out training of the default router on re-splits of the
    seed-0 train + validation rows (the test side is never read)."""
    encoder = load_encoder(DEFAULT_ENCODER)
    out: dict[str, Any] = {"router": DEFAULT_ROUTER, "encoder": DEFAULT_ENCODER, "rows": []}
    for name, path in DATASETS.items():
        labelled = read_labels(path)
        train_idx, val_idx, _ = split(labelled, seed=SEED)
        inner = labelled.subset(np.sort(np.concatenate([train_idx, val_idx])))
        for resplit in RESPLITS:
            a, b, c = split(inner, seed=resplit)
            held = inner.subset(c)
            row: dict[str, Any] = {"dataset": name, "resplit": resplit, "n": len(c)}
            for recipe, folds in (("holdout", 1), ("crossfit", 10)):
                log(f"{name} re-split {resplit} {recipe} ...")
                router, _ = train_router(
                    DEFAULT_ROUTER, inner, encoder, train_idx=a, val_idx=b, folds=folds, seed=SEED
                )
                scores = score_rows(router, encoder, held)
                row[recipe] = summary(recipe, scores, held)["apgr"]
            # What `strong_share` sends on unseen rows when its threshold comes, as for a
            # cross-validated artifact, from the router's scores on its own rows.
            seen = score_rows(router, encoder, inner.subset(np.concatenate([a, b])))
            row["shares"] = {
                share: float(np.mean(scores >= np.quantile(seen, 1.0 - share))) for share in SHARES
            }
            out["rows"].append(row)
    return out


NESTED_REPEATS, NESTED_FOLDS = (101, 102), 5


def nested() -> dict[str, Any]:
    """The default recipe's expected APGR, with less noise than one test split: outer
    5-fold group cross-validation over every row of each file, twice (outer seeds 101 and
    102). Each outer fold is scored by a router trained, with its own inner 10-fold
    selection, on the other four; nothing is chosen on the outer folds. The rows include
    the seed-0 test split, which this neither replaces nor tunes anything on."""
    encoder = load_encoder(DEFAULT_ENCODER)
    out: dict[str, Any] = {"router": DEFAULT_ROUTER, "encoder": DEFAULT_ENCODER, "rows": []}
    for name, path in DATASETS.items():
        labelled = read_labels(path)
        for repeat in NESTED_REPEATS:
            outer = cv_folds(
                labelled.prompts, labelled.weak, labelled.strong, NESTED_FOLDS, seed=repeat
            )
            for fold in range(NESTED_FOLDS):
                held_idx, rest = np.flatnonzero(outer == fold), np.flatnonzero(outer != fold)
                log(f"{name} outer seed {repeat} fold {fold} ...")
                router, _ = train_router(
                    DEFAULT_ROUTER, labelled, encoder, train_idx=rest, val_idx=[], seed=SEED
                )
                held = labelled.subset(held_idx)
                row = summary(DEFAULT_ROUTER, score_rows(router, encoder, held), held)
                out["rows"].append(
                    {"dataset": name, "repeat": repeat, "fold": fold, "n": len(held_idx)}
                    | _three(row)
                )
    return out


def nested_table(results: dict[str, Any]) -> list[str]:
    out = ["| dataset | outer folds | rows per fold | APGR mean ± SD (min–max) | CPT(50%) mean |"]
    out += ["|---|---|---|---|---|"]
    for name in DATASETS:
        rows = [r for r in results["rows"] if r["dataset"] == name]
        apgr = np.array([r["apgr"] for r in rows])
        cpt50 = np.mean([r["cpt50"] for r in rows])
        sizes = sorted({r["n"] for r in rows})
        out.append(
            f"| {name} | {len(rows)} | {sizes[0]}–{sizes[-1]} | {apgr.mean():.3f} ± "
            f"{apgr.std(ddof=1):.3f} ({apgr.min():.3f}–{apgr.max():.3f}) | {_p(cpt50)} |"
        )
    return out


def recipe_table(results: dict[str, Any]) -> list[str]:
    out = [
        "| dataset | re-split | held-out rows | hold-out recipe | cross-validated | difference |"
    ]
    out += ["|---|---|---|---|---|---|"]
    for name in DATASETS:
        rows = [r for r in results["rows"] if r["dataset"] == name]
        for r in rows:
            out.append(
                f"| {name} | {r['resplit']} | {r['n']} | {r['holdout']:.3f} | "
                f"{r['crossfit']:.3f} | {r['crossfit'] - r['holdout']:+.3f} |"
            )
        diff = np.array([r["crossfit"] - r["holdout"] for r in rows])
        means = (np.mean([r["holdout"] for r in rows]), np.mean([r["crossfit"] for r in rows]))
        out.append(
            f"| {name} | mean | | {means[0]:.3f} | {means[1]:.3f} | "
            f"{diff.mean():+.3f} ± {diff.std(ddof=1):.3f} (SD) |"
        )
    out += ["", "Share sent to the strong model on the held-out rows by the cross-validated "]
    out[-1] += "router's `strong_share` threshold (from its scores on its own rows):"
    out += ["", "| dataset | re-split | " + " | ".join(f"asked {s:.0%}" for s in SHARES) + " |"]
    out += ["|---|---|" + "---|" * len(SHARES)]
    for r in results["rows"]:
        cells = " | ".join(f"{r['shares'][s]:.1%}" for s in SHARES)
        out.append(f"| {r['dataset']} | {r['resplit']} | {cells} |")
    return out


def timing(
    mmlu: LabelledPrompts,
    parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    encoders: dict[str, Encoder],
    trained: dict[tuple[str, str, str], DifficultyRouter],
) -> dict[str, Any]:
    """Training time of the default router on MMLU (embedding cache warm) and the scoring
    latency of every MMLU router on single test prompts."""
    train_idx, val_idx, test_idx = parts
    t0 = time.perf_counter()
    train_router(
        DEFAULT_ROUTER, mmlu, encoders[DEFAULT_ENCODER], train_idx=train_idx, val_idx=val_idx
    )
    out: dict[str, Any] = {"train_default_mmlu_s": round(time.perf_counter() - t0, 2)}
    out["scoring"] = []
    test = mmlu.subset(test_idx)
    for spec, encoder in encoders.items():
        vectors = embed(encoder, test.prompts)
        for kind in KINDS:
            p50 = scoring_p50(trained["mmlu", spec, kind], vectors, test.prompts)
            out["scoring"].append({"encoder": spec, "kind": kind, "p50_us": p50})
    return out


def timing_only() -> dict[str, Any]:
    """`timing` alone: the MMLU routers trained as in `run`, nothing scored on test."""
    encoders = {spec: load_encoder(spec) for spec in ENCODERS}
    mmlu = read_labels(DATASETS["mmlu"])
    parts = split(mmlu, seed=SEED)
    trained: dict[tuple[str, str, str], DifficultyRouter] = {}
    for spec, encoder in encoders.items():
        for kind in KINDS:
            log(f"mmlu {spec} {kind} ...")
            trained["mmlu", spec, kind], _ = train_router(
                kind, mmlu, encoder, train_idx=parts[0], val_idx=parts[1], seed=SEED
            )
    return timing(mmlu, parts, encoders, trained)


def timing_table(results: dict[str, Any]) -> list[str]:
    out = ["Scoring one request on top of its embedding (p50, µs; MMLU routers):", ""]
    out += ["| encoder | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS)]
    for spec in ENCODERS:
        cells = [
            f"{r['p50_us']:.1f}"
            for k in KINDS
            for r in results["scoring"]
            if r["encoder"] == spec and r["kind"] == k
        ]
        out.append(f"| {_enc(spec)} | " + " | ".join(cells) + " |")
    out += ["", f"Training the default router ({DEFAULT_ROUTER}, static) on MMLU: "]
    out[-1] += f"{results['train_default_mmlu_s']} s (embedding cache warm; cold cache excluded)."
    return out


def _three(row: dict[str, Any]) -> dict[str, float]:
    return {k: row[k] for k in ("apgr", "cpt50", "cpt80")}


def _enc(spec: str) -> str:
    return spec.removeprefix("builtin:")


def _p(value: float) -> str:
    return f"{value:.1%}"


def tables(results: dict[str, Any]) -> list[str]:
    """Markdown tables (also the plain-text output)."""
    out = ["Selection (seed-0 split; 10-fold group cross-validation over train + validation: "]
    out[-1] += "mean APGR of the held-out folds, the folds' SD, the chosen hyper-parameters):"
    out += ["", "| dataset | encoder | router | CV APGR | fold SD | chosen hyper-parameters |"]
    out += ["|---|---|---|---|---|---|"]
    for r in results["selection"]:
        hyper = ", ".join(f"{k}={v}" for k, v in r["hyper"].items())
        out.append(
            f"| {r['dataset']} | {_enc(r['encoder'])} | {r['kind']} | {r['apgr']:.3f} | "
            f"{r['fold_sd']:.3f} | {hyper} |"
        )
    out += ["", "Test (scored once, after selection):", ""]
    out += ["| dataset | router | n | APGR | CPT(50%) | CPT(80%) | random (hashed) APGR | "]
    out[-1] += "oracle APGR / CPT(50%) / CPT(80%) |"
    out += ["|---|---|---|---|---|---|---|---|"]
    for r in results["test"]:
        o = r["oracle"]
        out.append(
            f"| {r['dataset']} | {r['role']}: {r['kind']} + {_enc(r['encoder'])} | {r['n']} | "
            f"**{r['apgr']:.3f}** | {_p(r['cpt50'])} | {_p(r['cpt80'])} | "
            f"{r['random_hashed']['apgr']:.3f} | {o['apgr']:.3f} / {_p(o['cpt50'])} / "
            f"{_p(o['cpt80'])} |"
        )
    out += ["", "Transfer: trained on MMLU (train + validation, cross-validated), scored on all "]
    out[-1] += "GSM8K:"
    out += ["", "| encoder | router | APGR | CPT(50%) | CPT(80%) |", "|---|---|---|---|---|"]
    for r in results["transfer"]:
        out.append(
            f"| {_enc(r['encoder'])} | {r['kind']} | {r['apgr']:.3f} | {_p(r['cpt50'])} | "
            f"{_p(r['cpt80'])} |"
        )
    out += ["", *timing_table(results)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="print one JSON document")
    mode.add_argument("--markdown", action="store_true", help="print the docs section")
    parser.add_argument(
        "--timing", action="store_true", help="training time and scoring latency only"
    )
    parser.add_argument(
        "--compare-recipes",
        action="store_true",
        help="cross-validated vs hold-out training on re-splits of train + validation",
    )
    parser.add_argument(
        "--nested",
        action="store_true",
        help="the default recipe under outer 5-fold cross-validation over every row, twice",
    )
    args = parser.parse_args(argv)
    missing = [str(p) for p in DATASETS.values() if not p.is_file()]
    if missing:
        print(
            f"skipped: labelled data not found ({', '.join(missing)}); set LLMROUTE_DATA "
            f"or put the shared data at {Path(DATA)}",
            file=sys.stderr,
        )
        return 0
    info = machine()
    if args.timing:
        timed = timing_only()
        if args.json:
            dump_json({"machine": info} | timed)
        else:
            print(f"Measured {info['date']} on {info['nproc']} CPUs, {info['cpu']}.\n")
            print("\n".join(timing_table(timed)))
        return 0
    if args.compare_recipes:
        compared = compare_recipes()
        if args.json:
            dump_json({"machine": info} | compared)
        else:
            print("\n".join(recipe_table(compared)))
        return 0
    if args.nested:
        done = nested()
        if args.json:
            dump_json({"machine": info} | done)
        else:
            print("\n".join(nested_table(done)))
        return 0
    results = run()
    if args.json:
        dump_json({"machine": info, "seed": SEED, "routellm": ROUTELLM} | results)
        return 0
    if args.markdown:
        print("## Difficulty routing (MMLU, GSM8K)\n")
        print(
            f"Measured {info['date']} on {info['nproc']} CPUs (nproc), {info['cpu']}, "
            f"Python {info['python']}. Command: `.venv/bin/python {info['command']}`.\n"
        )
    for line in tables(results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
