"""Rebuild the shipped jailbreak / prompt-injection detectors and print validation numbers.

    python benchmarks/train_safety_artifacts.py [--data-dir /work/shared/data] [--out DIR]

Trains one detector per built-in encoder (``builtin:static``, ``builtin:minilm-int8``, the
latter with the MiniLM token-bag view of `llmroute.safety.token_bag`) on
jailbreak/train.jsonl + prompt_injection/train.jsonl (the group split of
`llmroute.safety.injection.split_sides`, seed 0: train < 60, validation < 80, test the
rest): the settings are chosen by 5-fold group cross-validation over train + validation,
the threshold is set on the out-of-fold scores (FPR <= 1.5%) and the model is fitted on
train + validation. Writes them to src/llmroute/safety/data/injection-<encoder>/ (or
under --out) and prints each one's candidates and out-of-fold metrics. Test rows are not
read here: see benchmarks/bench_safety.py.

The shipped static artifact (since 2026-12-06) also learnt from benign documents in nine
Latin-script languages: ``--encoders static --benign-extra
benchmarks/data/latin_prose_long.jsonl`` (their ``train`` rows; docs/benchmarks.md,
"Benign documents in other Latin-script languages"); the minilm-int8 one did not.
``--benign-extra-weight`` sets those rows' sample weight in the fit, one for all files or
one per file (``--benign-extra latin_prose_long.jsonl benign_technical.jsonl
--benign-extra-weight 1 0.1``). A row keeps its label, so a file of attacks goes there
too (`benchmarks/embed_injections.py`: injections hidden in technical excerpts).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

from llmroute.encoders.builtin import load_builtin
from llmroute.encoders.cached import CachedEncoder
from llmroute.safety.injection import (
    SafetyData,
    read_safety_data,
    save_detector,
    train_detector,
)
from llmroute.safety.token_bag import load_token_bag

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = ("static", "minilm-int8")


def train_rows(*paths: Path, weights: Sequence[float] = ()) -> SafetyData:
    """The rows of `paths` whose ``split`` is ``train`` (the others stay held out), each
    file's rows with its sample weight in the fit (`weights`: one for all files, or one
    per file; default 1)."""
    each = list(weights or [1.0])
    if len(each) == 1:
        each *= len(paths)
    if len(each) != len(paths) or not all(0 < w < math.inf for w in each):
        raise SystemExit("--benign-extra-weight: one positive number, or one per file")
    rows = [
        (r, weight)
        for path, weight in zip(paths, each, strict=True)
        for r in map(json.loads, filter(str.strip, path.read_text(encoding="utf-8").splitlines()))
        if r["split"] == "train"
    ]
    return SafetyData(
        tuple(r["text"] for r, _ in rows),
        tuple(r["label"] for r, _ in rows),
        tuple(r["group"] for r, _ in rows),
        tuple(r.get("source", "") for r, _ in rows),
        tuple(r.get("genre", "") for r, _ in rows),
        weights=tuple(w for _, w in rows),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--out", type=Path, default=ROOT / "src/llmroute/safety/data")
    parser.add_argument("--encoders", nargs="*", default=list(ENCODERS))
    parser.add_argument(
        "--neighbours",
        action="store_true",
        help="let cross-validation try the nearest-known-text columns (not shipped)",
    )
    parser.add_argument(
        "--benign-extra",
        type=Path,
        nargs="+",
        help="JSONL files with a 'split' field (benchmarks/data/latin_prose_long.jsonl, "
        "benign_technical.jsonl): their 'train' rows join the training pool with their "
        "own labels (embed_injections.py's attack rows too), the others are left for "
        "the benchmarks",
    )
    parser.add_argument(
        "--benign-extra-weight",
        type=float,
        nargs="+",
        help="the sample weight of each --benign-extra file's rows in the fit, one for "
        "all or one per file (default 1; the selection and threshold count every row as 1)",
    )
    args = parser.parse_args()
    if args.benign_extra_weight is not None and args.benign_extra is None:
        parser.error("--benign-extra-weight weighs the --benign-extra files' rows: give them")
    extra = (
        None
        if args.benign_extra is None
        else train_rows(*args.benign_extra, weights=args.benign_extra_weight or ())
    )
    data = read_safety_data(
        args.data_dir / "jailbreak/train.jsonl", args.data_dir / "prompt_injection/train.jsonl"
    )
    cache = Path("~/.cache/llmroute/embeddings").expanduser()
    for name in args.encoders:
        encoder = CachedEncoder(load_builtin(name), cache)
        bag = load_token_bag() if name.startswith("minilm") else None
        detector, report = train_detector(
            data,
            encoder,
            token_bag=bag,
            neighbours=args.neighbours,
            extra=extra,
            progress=print,
        )
        folder = save_detector(detector, args.out / f"injection-{name}")
        validation = report.validation.to_dict()
        print(f"== {name}: {encoder.identity} -> {folder} (out-of-fold numbers)")
        print(json.dumps({"hyper": report.hyper, "rows": report.rows}, sort_keys=True))
        keys = ("n", "n_attack", "tpr", "fpr", "precision", "auc", "threshold")
        print(json.dumps({k: validation[k] for k in keys}))
        hard = (validation["hard_negative_n"], validation["hard_negative_fpr"])
        print(f"hard negatives: n={hard[0]} fpr={hard[1]:.4f}")
        print("other labels:", json.dumps(validation["other_labels"]))
        print("per source:", json.dumps(validation["per_source"]))
        print("rule hits:", json.dumps(validation["rule_hits"]))


if __name__ == "__main__":
    main()
