"""What the intent layer's script check costs a request, and what it saves.

    .venv/bin/python benchmarks/bench_script_check.py [--json] [--number 2000]

1. `ScriptCheck.unread` alone (the built-in encoders' check: Latin read, the first
   256 × 6 = 1,536 characters looked at), on texts of 200 and 8,000 characters in
   English, German, Russian, Chinese, and Python with Chinese comments: the best of 7
   repeats of `--number` calls, in µs a call; ``us`` for a text the thread has not just
   checked (two equal texts, other objects, in turn), ``again`` for the same text asked
   about again (what the safety layer and the difficulty router pay after the intent
   layer: the thread's last count is kept).
2. `Router.decide` on examples/registry.yaml with `builtin:static`, as declared (Latin)
   and with ``scripts: any`` (no check), on the 200-character texts: p50 over `--number`
   decisions each, interleaved so that both see the same machine load.

The texts are made here (a sentence repeated to length), not taken from any data set.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, dump_json, log, machine

from llmroute.decide import Router
from llmroute.encoders.scripts import BUILTIN_SCRIPTS, ScriptCheck
from llmroute.encoders.tokenize import CHARS_PER_TOKEN

SENTENCES = {
    "en": "Please write a Python function that merges two sorted lists into one. ",
    "de": "Schreib bitte eine Python-Funktion, die zwei sortierte Listen zusammenführt. ",
    "ru": "Напиши, пожалуйста, функцию на Python, которая объединяет два списка. ",
    "zh": "请帮我写一个Python函数，把两个已经排好序的列表合并成一个新的有序列表。",
    "code+zh": "def merge(a, b):  # 合并两个有序列表\n    return sorted(a + b)  # 返回结果\n",
}
LENGTHS = (200, 8000)


def text_of(sentence: str, length: int) -> str:
    return (sentence * (length // len(sentence) + 1))[:length]


def check_alone(number: int) -> dict[str, dict[str, Any]]:
    check = ScriptCheck(BUILTIN_SCRIPTS, window=256 * CHARS_PER_TOKEN)
    out: dict[str, dict[str, Any]] = {}
    for lang, sentence in SENTENCES.items():
        for length in LENGTHS:
            text = text_of(sentence, length)
            other = "".join(list(text))  # equal, another object: not the last one checked
            check.unread(text)  # the thread's buffer
            pair = functools.partial(lambda a, b: (check.unread(a), check.unread(b)), text, other)
            best = min(timeit.repeat(pair, number=number // 2, repeat=7))
            again = functools.partial(check.unread, text)
            best_again = min(timeit.repeat(again, number=number, repeat=7))
            out[f"{lang} {length}"] = {
                "us": round(best / (2 * (number // 2)) * 1e6, 2),
                "again": round(best_again / number * 1e6, 2),
                "unread": check.unread(text),
            }
    return out


def decisions(number: int) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((ROOT / "examples" / "registry.yaml").read_text(encoding="utf-8"))
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        routers = {}
        for name, encoder in (
            ("latin", "builtin:static"),
            ("any", {"kind": "builtin", "name": "static", "scripts": "any"}),
        ):
            data["encoder"] = encoder
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
            routers[name] = Router.from_yaml(path)
        for lang, sentence in SENTENCES.items():
            text = text_of(sentence, 200)
            times: dict[str, list[float]] = {name: [] for name in routers}
            layers: dict[str, str] = {}
            for router in routers.values():
                router.decide(text)  # warm
            for _ in range(number):
                for name, router in routers.items():
                    fresh = "".join([text[:1], text[1:]])  # a new request: a new object
                    start = time.perf_counter_ns()
                    decision = router.decide(fresh)
                    times[name].append((time.perf_counter_ns() - start) / 1000)
                    layers[name] = f"{decision.layer}:{decision.route}"
            out[lang] = {
                name: {"p50_us": round(statistics.median(t), 1), "decision": layers[name]}
                for name, t in times.items()
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    args = parser.parse_args()
    log("the check alone ...")
    alone = check_alone(args.number)
    log("whole decisions ...")
    decided = decisions(max(args.number // 4, 50))
    if args.json:
        dump_json({"machine": machine(), "check": alone, "decide": decided})
        return
    print("check alone: text, µs a call, µs asked again, what it said")
    for key, row in alone.items():
        print(f"  {key:14} {row['us']:8.2f} {row['again']:8.2f}  {row['unread']}")
    print("Router.decide p50 µs (static encoder), 200 characters: latin (checked) / any")
    for lang, row in decided.items():
        latin, any_ = row["latin"], row["any"]
        print(
            f"  {lang:8} {latin['p50_us']:8.1f} {latin['decision']:28} "
            f"{any_['p50_us']:8.1f} {any_['decision']}"
        )


if __name__ == "__main__":
    sys.exit(main())
