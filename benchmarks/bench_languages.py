"""What the example registry does with prompts that are not in English: an honest check,
nothing is tuned here.

    .venv/bin/python benchmarks/bench_languages.py [--encoders builtin:minilm-int8 ...]
        [--json]

Data: benchmarks/data/multilingual_routing.jsonl, written by hand for this check. Split
``test``: the same 8 requests in English, German, Spanish, Russian, Arabic and Chinese,
one for each route of examples/registry.yaml (two for code) and one out of scope (route
``(default)``: the default should serve it). Split ``added``: other requests, in Chinese
and Spanish only, one per route and one out of scope.

For each encoder, two registries: examples/registry.yaml as it is, and the same with the
``added`` requests appended to their routes' examples (the out-of-scope ones to
``intent.out_of_scope``): whether examples in a language help the English encoders with
it. Per language: how many were right, how many the intent layer routed wrong (a
confident misroute: an LLM fallback is never asked), how many went to the default, the
mean confidence, and the routes chosen; and what the safety layer did with them (the
example registry's profile blocks injections): how many it blocked, how many the
injection classifier scored, and their worst score. docs/encoders.md ("Prompts in other
languages") and docs/benchmarks.md have the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, dump_json, log, machine

from llmroute.decide import Router

DATA = ROOT / "benchmarks" / "data" / "multilingual_routing.jsonl"
REGISTRY = ROOT / "examples" / "registry.yaml"
ENCODERS = ("builtin:minilm-int8", "builtin:static")


def _rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]


def _registry(encoder: str, added: list[dict[str, str]], folder: Path) -> Path:
    data = yaml.safe_load(REGISTRY.read_text(encoding="utf-8"))
    data["encoder"] = encoder
    for row in added:
        if row["route"] == "(default)":
            data["intent"]["out_of_scope"].append(row["text"])
            continue
        route = next(r for r in data["routes"] if r["name"] == row["route"])
        route["examples"].append(row["text"])
    path = folder / f"registry-{len(added)}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _score(router: Router, rows: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        decision = router.decide(row["text"])
        to_default = decision.layer == "default"
        right = to_default if row["route"] == "(default)" else decision.route == row["route"]
        lang = out.setdefault(
            row["lang"],
            {"n": 0, "right": 0, "intent_wrong": 0, "default": 0, "confidence": 0.0},
        )
        safety = decision.safety
        score = None if safety is None else safety.injection_score
        lang["blocked"] = lang.get("blocked", 0) + decision.blocked
        lang["scored"] = lang.get("scored", 0) + (score is not None)
        lang["worst"] = max(lang.get("worst", 0.0), score or 0.0)
        lang["n"] += 1
        lang["right"] += right
        lang["intent_wrong"] += decision.layer == "intent" and not right
        lang["default"] += to_default
        lang["confidence"] += decision.confidence
        lang.setdefault("routes", Counter())[decision.route] += 1
    for lang in out.values():
        lang["confidence"] = round(lang["confidence"] / lang["n"], 3)
        lang["routes"] = dict(lang["routes"].most_common())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    args = parser.parse_args()
    rows = _rows()
    test = [r for r in rows if r["split"] == "test"]
    added = [r for r in rows if r["split"] == "added"]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for encoder in args.encoders:
            for name, extra in (("as shipped", []), ("with the added examples", added)):
                log(f"{encoder}, {name} ...")
                router = Router.from_yaml(_registry(encoder, extra, Path(tmp)))
                results[f"{encoder}, {name}"] = _score(router, test)
    if args.json:
        dump_json({"machine": machine(), "results": results})
        return
    for setting, langs in results.items():
        print(f"\n{setting}")
        print("lang  right  intent-wrong  default  confidence  blocked  scored  worst  routes")
        for lang, s in langs.items():
            routes = ", ".join(f"{k} {v}" for k, v in s["routes"].items())
            print(
                f"{lang:4}  {s['right']}/{s['n']}  {s['intent_wrong']:12}  {s['default']:7}"
                f"  {s['confidence']:10.3f}  {s['blocked']:7}  {s['scored']:6}"
                f"  {s['worst']:5.3f}  {routes}"
            )


if __name__ == "__main__":
    sys.exit(main())
