"""Cascade on GSM8K: the learned gate (weak answer → accept or escalate) against random
escalation and routing-only difficulty routers, on the difficulty routers' split.

    .venv/bin/python benchmarks/bench_cascade.py [--json | --markdown] [--val-only]

Split: `split(data, seed=0)` (406 / 135 / 135 rows of gsm8k_dev), the difficulty routers'
split. Everything is chosen on validation before the test rows are scored, once:

- the gate (per encoder): `train_gate` fits every candidate (design parts, embedding
  weight, L2) on train, keeps the best validation ROC AUC for ``weak_correct`` and picks the
  threshold on validation; "gate (train)" is that model, "gate (shipped)" the same settings
  refitted on train + validation (the builtin artifact in src/llmroute/gates/data);
- the headline encoder: the gate with the higher validation AUC;
- the difficulty routers (per encoder): linear, knn, mf, mlp trained on train with
  `train_router` and the best validation APGR kept; the overall best (kind, encoder) by
  validation APGR is the router the cascade is compared with.

Prices: relative 1 (weak) and 10 (strong) per request. A cascade pays the weak call always
and the strong call when it escalates; a router pays one of the two.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, dump_json, log, machine

from llmroute.difficulty import LabelledPrompts, train_router
from llmroute.difficulty.train import embed
from llmroute.encoders import CachedEncoder, default_cache_dir, load_builtin
from llmroute.encoders.base import Encoder
from llmroute.gates.cascade_bench import (
    DEFAULT_PRICES,
    evaluate_cascade,
    heuristic_accept,
    oracle_accept,
)
from llmroute.gates.gate_train import (
    GateData,
    embed_gate_data,
    gate_split,
    read_gate_data,
    train_gate,
)
from llmroute.gates.learned import LearnedGateModel

GSM8K = DATA / "gsm8k" / "gsm8k_dev.jsonl"
ENCODERS = ("builtin:static", "builtin:minilm-int8")
KINDS = ("linear", "knn", "mf", "mlp")
SEED = 0


def load_encoder(spec: str) -> Encoder:
    return CachedEncoder(load_builtin(spec), default_cache_dir() / "embeddings")


def _labelled(data: GateData) -> LabelledPrompts:
    assert data.strong is not None
    n = len(data)
    return LabelledPrompts(
        data.prompts, data.weak, data.strong, tuple(map(str, range(n))), (None,) * n
    )


def _eval(
    name: str, accept: np.ndarray, data: GateData, idx: np.ndarray, **kw: Any
) -> dict[str, Any]:
    assert data.strong is not None
    result = evaluate_cascade(name, accept, data.weak[idx], data.strong[idx], **kw)
    result.pop("curves")
    return result


def validation(data: GateData) -> dict[str, Any]:
    """Everything chosen on validation: gates, routers, the headline encoder."""
    train_idx, val_idx, _ = gate_split(data, seed=SEED)
    labelled = _labelled(data)
    out: dict[str, Any] = {"gates": {}, "routers": {}}
    for spec in ENCODERS:
        enc = load_encoder(spec)
        log(f"{spec}: gate")
        embedded = embed_gate_data(enc, data)
        model, metrics = train_gate(data, enc, seed=SEED, refit=False, embedded=embedded)
        accept = model.score_embedded(*(_take(embedded, val_idx)))
        out["gates"][spec] = {
            "model": model,
            "metrics": {k: v for k, v in metrics.items() if k != "candidates"},
            "n_candidates": len(metrics["candidates"]),
            "val": _eval("learned", accept, data, val_idx, bootstrap=1000),
        }
        routers = {}
        for kind in KINDS:
            log(f"{spec}: router {kind}")
            # Fitted on train only (folds=1): routers are compared on validation scores below.
            router, rmetrics = train_router(
                kind, labelled, enc, train_idx=train_idx, val_idx=val_idx, folds=1, seed=SEED
            )
            sub = labelled.subset(val_idx)
            scores = router.score(embed(enc, sub.prompts), sub.prompts)
            val = _eval("learned", accept, data, val_idx, router_scores=scores, bootstrap=0)
            routers[kind] = {"router": router, "hyper": rmetrics["hyper"], "val": val["router"]}
        best = max(routers, key=lambda k: routers[k]["val"]["apgr"])
        out["routers"][spec] = {"best": best, "all": routers}
    out["headline"] = max(ENCODERS, key=lambda s: out["gates"][s]["metrics"]["val_auc"])
    out["best_router"] = max(
        ((s, out["routers"][s]["best"]) for s in ENCODERS),
        key=lambda sk: out["routers"][sk[0]]["all"][sk[1]]["val"]["apgr"],
    )
    return out


def _take(embedded: Any, idx: np.ndarray) -> tuple[Any, Any, Any]:
    part = embedded.take(idx)
    return part.checks, part.answer_emb, part.prompt_emb


def test(data: GateData, chosen: dict[str, Any]) -> dict[str, Any]:
    """The test rows, scored once with everything fixed above."""
    _, _, test_idx = gate_split(data, seed=SEED)
    labelled = _labelled(data).subset(test_idx)
    prompts = tuple(data.prompts[i] for i in test_idx)
    answers = tuple(data.answers[i] for i in test_idx)
    router_enc, router_kind = chosen["best_router"]
    best_router = chosen["routers"][router_enc]["all"][router_kind]["router"]
    enc_r = load_encoder(router_enc)
    router_scores = best_router.score(embed(enc_r, labelled.prompts), labelled.prompts)
    router_name = f"{router_kind} + {router_enc.removeprefix('builtin:')}"
    out: dict[str, Any] = {"router": router_name, "gates": {}}
    for spec in ENCODERS:
        enc = load_encoder(spec)
        own = chosen["routers"][spec]
        own_router = own["all"][own["best"]]["router"]
        own_scores = own_router.score(embed(enc, labelled.prompts), labelled.prompts)
        shipped = LearnedGateModel.load("builtin", enc)
        trained = chosen["gates"][spec]["model"]
        rows = {}
        for name, model in (("gate (shipped, train+val)", shipped), ("gate (train)", trained)):
            accept = model.score(prompts, answers)
            rows[name] = _eval(
                name, accept, data, test_idx, router_scores=router_scores, router_name=router_name
            )
            rows[name]["same_encoder_router"] = _eval(
                name, accept, data, test_idx, router_scores=own_scores, bootstrap=0
            )["router"] | {"name": f"{own['best']} + {spec.removeprefix('builtin:')}"}
            esc = accept < model.threshold
            rows[name]["at_gate_threshold"] = {
                "threshold": model.threshold,
                "escalation": float(esc.mean()),
                "accuracy": float(np.where(esc, labelled.strong, labelled.weak).mean()),
            }
        out["gates"][spec] = rows
    out["heuristic"] = _eval("heuristic", heuristic_accept(prompts, answers), data, test_idx)
    out["oracle"] = _eval("oracle", oracle_accept(labelled.weak), data, test_idx, bootstrap=0)
    return out


def _p(value: float) -> str:
    return f"{value:.1%}"


def _val_tables(chosen: dict[str, Any]) -> list[str]:
    lines = [
        "Validation (135 rows; the gate trained on train, every choice made here):",
        "",
        "| encoder | gate parts | C | val AUC | val APGR (95% CI) | escalation at 95% of strong "
        "| threshold → escalation / accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in ENCODERS:
        g = chosen["gates"][spec]
        m, v = g["metrics"], g["val"]
        ci = v.get("apgr_ci95", [float("nan")] * 2)
        lines.append(
            f"| {spec.removeprefix('builtin:')} | {'+'.join(m['parts'])} | {m['c']:g} | "
            f"{m['val_auc']:.3f} | {v['apgr']:.3f} ({ci[0]:.3f}-{ci[1]:.3f}) | "
            f"{_p(v['escalation_at_95pct_quality'])} | {m['threshold']:.3f} → "
            f"{_p(m['val_escalation_at_threshold'])} / {_p(m['val_accuracy_at_threshold'])} |"
        )
    lines += [
        "",
        "| encoder | router | val APGR | strong share at 95% of strong | chosen hyper-parameters |",
        "|---|---|---|---|---|",
    ]
    for spec in ENCODERS:
        for kind, r in chosen["routers"][spec]["all"].items():
            mark = " (best)" if kind == chosen["routers"][spec]["best"] else ""
            hyper = ", ".join(f"{k}={v}" for k, v in r["hyper"].items())
            lines.append(
                f"| {spec.removeprefix('builtin:')} | {kind}{mark} | {r['val']['apgr']:.3f} | "
                f"{_p(r['val']['strong_share_at_95pct_quality'])} | {hyper} |"
            )
    enc, kind = chosen["best_router"]
    lines += [
        "",
        f"Selected on validation: gate encoder {chosen['headline']}; router {kind} + {enc}.",
        "",
    ]
    return lines


def _test_tables(results: dict[str, Any], headline: str) -> list[str]:
    t = results["test"]
    lines = [
        f"Test (135 rows, scored once; router for comparison: {t['router']}, trained on train):",
        "",
        "| encoder | gate | APGR (95% CI) | escalation at 95% of strong | cost there | "
        "beats random at every rate (min lift) | router strong share at 95% / cost | "
        "same-encoder router share at 95% | gate threshold → escalation / accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in ENCODERS:
        for name, r in t["gates"][spec].items():
            ci = r.get("apgr_ci95", [float("nan")] * 2)
            own, at = r["same_encoder_router"], r["at_gate_threshold"]
            lines.append(
                f"| {spec.removeprefix('builtin:')} | {name} | {r['apgr']:.3f} "
                f"({ci[0]:.3f}-{ci[1]:.3f}) | {_p(r['escalation_at_95pct_quality'])} | "
                f"{r['cost_at_95pct_quality']:.2f} | {r['beats_random_at_every_rate']} "
                f"({r['min_lift_over_random']:+.3f}) | "
                f"{_p(r['router']['strong_share_at_95pct_quality'])} / "
                f"{r['router']['cost_at_95pct_quality']:.2f} | "
                f"{_p(own['strong_share_at_95pct_quality'])} ({own['name']}) | "
                f"{at['threshold']:.3f} → {_p(at['escalation'])} / {_p(at['accuracy'])} |"
            )
    for name in ("heuristic", "oracle"):
        r = t[name]
        lines.append(
            f"| - | {name} | {r['apgr']:.3f} | {_p(r['escalation_at_95pct_quality'])} | "
            f"{r['cost_at_95pct_quality']:.2f} | {r['beats_random_at_every_rate']} "
            f"({r['min_lift_over_random']:+.3f}) | | | |"
        )
    head = t["gates"][headline]["gate (shipped, train+val)"]
    lines += [
        "",
        f"Escalation rate vs accuracy, {headline} gate (shipped), test; cost with prices "
        f"{DEFAULT_PRICES[0]:g}/{DEFAULT_PRICES[1]:g} (break-even escalation "
        f"{_p(head['break_even_escalation'])}); random = random escalation at the same rate:",
        "",
        "| threshold | escalation | accuracy | cost | random escalation accuracy |",
        "|---|---|---|---|---|",
    ]
    for row in head["table"]:
        lines.append(
            f"| {row['threshold']:.1f} | {_p(row['escalation'])} | {_p(row['accuracy'])} | "
            f"{row['cost']:.2f} | {_p(row['random_accuracy'])} |"
        )
    lines.append(
        f"\nweak {_p(head['weak_accuracy'])}, strong {_p(head['strong_accuracy'])}; random "
        f"escalation: APGR {head['random']['apgr']:.3f}, escalation at 95% "
        f"{_p(head['random']['escalation_at_95pct_quality'])}; router APGR "
        f"{head['router']['apgr']:.3f}."
    )
    return lines


def _jsonable(chosen: dict[str, Any]) -> dict[str, Any]:
    return {
        "headline": chosen["headline"],
        "best_router": list(chosen["best_router"]),
        "gates": {
            s: {k: v for k, v in g.items() if k != "model"} for s, g in chosen["gates"].items()
        },
        "routers": {
            s: {
                "best": r["best"],
                "all": {k: {"hyper": v["hyper"], "val": v["val"]} for k, v in r["all"].items()},
            }
            for s, r in chosen["routers"].items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="print one JSON document")
    mode.add_argument("--markdown", action="store_true", help="print the docs section")
    parser.add_argument("--val-only", action="store_true", help="stop before the test rows")
    parser.add_argument("--save", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    if not Path(GSM8K).is_file():
        print(f"skipped: {GSM8K} not found; set LLMROUTE_DATA", file=sys.stderr)
        return 0
    data = read_gate_data(GSM8K, need_strong=True)
    chosen = validation(data)
    results: dict[str, Any] = {"validation": _jsonable(chosen)}
    if not args.val_only:
        results["test"] = test(data, chosen)
    info = machine()
    if args.save is not None:
        document = {"machine": info, "seed": SEED} | results
        args.save.write_text(json.dumps(document, indent=1, default=str) + "\n")
    if args.json:
        dump_json({"machine": info, "seed": SEED} | results)
        return 0
    if args.markdown:
        print("## Cascade gate (GSM8K)\n")
        print(
            f"Measured {info['date']}, Python {info['python']}. Command: `.venv/bin/python "
            f"{info['command']}`.\n"
        )
    for line in _val_tables(chosen):
        print(line)
    if "test" in results:
        for line in _test_tables(results, chosen["headline"]):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
