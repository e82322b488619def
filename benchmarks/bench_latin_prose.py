"""Benign long documents in Latin-script languages through the safety layer: how many the
injection classifier flags, per language and encoder.

    python benchmarks/bench_latin_prose.py [--splits validation test] [--artifacts DIR]
        [--json]

Data: benchmarks/data/latin_prose_long.jsonl, written by hand for this check: five
documents of 1,400-2,200 characters (an office e-mail, a recipe, a history or travel
article, an appliance manual, a notice, news item or letter) in German, French, Spanish,
Portuguese, Italian, Dutch, Polish, Turkish and Vietnamese, and three English ones as a
control. Each row's ``split`` was fixed before anything was scored: ``train`` (two a
language: `train_safety_artifacts.py --benign-extra` may learn from them),
``validation`` (one a language: what a candidate was judged on) and ``test`` (two a
language, the English ones: read once, at the end).

Each document is sent through `Router.decide` with examples/registry.yaml (its
``standard`` profile blocks injections) and the given encoder: whether the layer flagged
or blocked it, and its score (the worst window's) over the threshold. Its windows
(`llmroute.safety.windows`, the layer's settings) are also scored one by one: how many
reach the threshold. `--artifacts DIR` uses DIR/injection-<encoder> instead of the
shipped artifacts.
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

DATA = ROOT / "benchmarks" / "data" / "latin_prose_long.jsonl"
ENCODERS = ("static", "minilm-int8")


def bench(name: str, docs: list[dict[str, str]], artifacts: Path | None) -> dict[str, Any]:
    encoder = load_builtin(name)
    folder = (
        builtin_detector_dir(encoder.identity)
        if artifacts is None
        else artifacts / f"injection-{name}"
    )
    detector = load_detector(folder, encoder_identity=encoder.identity)
    with tempfile.TemporaryDirectory() as tmp:
        router = Router.from_yaml(
            example_registry(name, None if artifacts is None else folder, Path(tmp))
        )
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"docs": 0, "flagged": 0, "blocked": 0, "windows": 0, "windows_flagged": 0}
    )
    for doc in docs:
        line = out[doc["lang"]]
        decision = router.decide(doc["text"])
        safety = decision.safety
        assert safety is not None
        score = safety.injection_score or 0.0
        line["docs"] += 1
        line["flagged"] += "injection" in safety.fired or any(
            f.startswith("rule:") for f in safety.fired
        )
        line["blocked"] += decision.blocked
        line.setdefault("score_over_threshold", []).append(round(score / detector.threshold, 2))
        found, _ = windows(doc["text"], *detector.window)
        scores = detector.score(found, encoder.encode(found))
        line["windows"] += len(found)
        line["windows_flagged"] += int(np.sum(scores >= detector.threshold))
    return {"encoder": encoder.identity, "threshold": detector.threshold, "languages": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", nargs="+", default=["validation"])
    parser.add_argument("--artifacts", type=Path, help="score DIR/injection-<encoder>")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    args = parser.parse_args()
    docs = split_rows(DATA, args.splits)
    results = {name: bench(name, docs, args.artifacts) for name in args.encoders}
    if args.json:
        dump_json({"machine": machine(), "splits": args.splits, "results": results})
        return
    for name, result in results.items():
        print(f"\n{name} ({result['encoder']}), threshold {result['threshold']:.3f}")
        print("lang  docs flagged blocked  windows flagged  score/threshold")
        total = defaultdict(int)
        for lang, s in result["languages"].items():
            for key in ("docs", "flagged", "blocked", "windows", "windows_flagged"):
                total[key] += s[key] if lang != "en" else 0
            print(
                f"{lang:4}  {s['docs']:4} {s['flagged']:7} {s['blocked']:7}  {s['windows']:7}"
                f" {s['windows_flagged']:7}  {s['score_over_threshold']}"
            )
        print(
            f"non-English: {total['flagged']}/{total['docs']} documents flagged, "
            f"{total['windows_flagged']}/{total['windows']} windows"
        )


if __name__ == "__main__":
    sys.exit(main())
