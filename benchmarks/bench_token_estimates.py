"""The pre-flight token estimate per language: the old four characters a token, the
per-script estimate (`llmroute.dispatch.usage.estimated_text_tokens`), the packaged
WordPiece count (`count_tokens`) and the UTF-8 bound (`text_tokens_at_most`), against
hosted BPE tokenizers where one is importable; and what the estimate costs a call.

    python benchmarks/bench_token_estimates.py [--repeat 5] [--json]

Data: the hand-written texts the repo has, every row (none of them was fit to: the
weights are round numbers per UTF-8 byte length): benchmarks/data/multilingual_routing.jsonl
(en/de/es/ru/ar/zh prompts), scripts_prose.jsonl (one note in 15 scripts) and
latin_prose_long.jsonl (long documents in ten Latin-script languages).

BPE references: ``cl100k_base`` (GPT-4, GPT-3.5) and ``o200k_base`` (GPT-4o and later)
from the ``bpe-openai`` package (its Rust crate embeds both vocabularies, so nothing is
downloaded). It is not a dependency of llmroute: install it beside the project
(``pip install bpe-openai``) to get those columns; without it they are left out.

Timing: microseconds a call, the best of `--repeat` runs of many calls, old and new in
the same run, for English and Chinese texts of 200 and 8,000 characters, a Russian one
of 8,000, and a ten-message English chat body through `estimated_prompt_tokens`.
"""

from __future__ import annotations

import argparse
import json
import math
import timeit
from collections.abc import Callable, Mapping
from typing import Any

from _common import ROOT, dump_json, machine

from llmroute.dispatch.usage import (
    count_tokens,
    estimated_prompt_tokens,
    estimated_text_tokens,
    prompt_chars,
    text_tokens_at_most,
)

DATA = ROOT / "benchmarks" / "data"
FILES = ("multilingual_routing.jsonl", "scripts_prose.jsonl", "latin_prose_long.jsonl")


def _bpe() -> dict[str, Callable[[str], int]]:
    try:
        import bpe_openai  # type: ignore[import-not-found]
    except ImportError:
        return {}
    out: dict[str, Callable[[str], int]] = {}
    for name in ("cl100k_base", "o200k_base"):
        encoding = bpe_openai.get_encoding(name)
        out[name] = lambda text, e=encoding: len(e.encode(text))
    return out


def old_text(text: str) -> int:
    return len(text) // 4


def old_prompt(body: Mapping[str, Any]) -> int:
    return prompt_chars(body) // 4


def texts() -> list[tuple[str, str, str]]:
    """(file, language, text) of every row."""
    out = []
    for name in FILES:
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            out.append((name.removesuffix(".jsonl"), row["lang"], row["text"]))
    return out


def counts(rows: list[tuple[str, str, str]], bpe: Mapping[str, Callable[[str], int]]) -> list[Any]:
    """Totals per (file, language): characters and each count."""
    counters: dict[str, Callable[[str], int]] = {
        "old": old_text,
        "new": estimated_text_tokens,
        "wordpiece": count_tokens,
        "at_most": text_tokens_at_most,
        **bpe,
    }
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for file, lang, text in rows:
        line = groups.setdefault(
            (file, lang), {"rows": 0, "chars": 0, **dict.fromkeys(counters, 0)}
        )
        line["rows"] += 1
        line["chars"] += len(text)
        for name, count in counters.items():
            line[name] += count(text)
    return [{"file": f, "lang": lang, **line} for (f, lang), line in groups.items()]


def errors(lines: list[dict[str, Any]], reference: str) -> dict[str, Any]:
    """Over the languages: the geometric mean of each estimate's ratio to `reference`'s
    count (1 is right on average), its typical factor off (exp of the mean |log ratio|),
    and the lowest ratio (how far it undercounts at worst)."""
    out = {}
    for name in ("old", "new", "wordpiece", "at_most"):
        logs = [math.log(max(line[name], 1) / line[reference]) for line in lines]
        out[name] = {
            "geomean_ratio": round(math.exp(sum(logs) / len(logs)), 2),
            "typical_factor_off": round(math.exp(sum(map(abs, logs)) / len(logs)), 2),
            "lowest_ratio": round(math.exp(min(logs)), 2),
        }
    return out


def per_call_us(call: Callable[[], object], repeat: int) -> float:
    number = 2000
    return round(min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6, 3)


def timings(repeat: int) -> dict[str, dict[str, float]]:
    lines = (DATA / FILES[1]).read_text(encoding="utf-8").splitlines()
    prose = {row["lang"]: row["text"] for row in map(json.loads, lines)}

    def sized(text: str, size: int) -> str:
        return (text * (size // len(text) + 1))[:size]

    cases = {
        "en_200": sized(prose["en"], 200),
        "en_8000": sized(prose["en"], 8000),
        "zh_200": sized(prose["zh"], 200),
        "zh_8000": sized(prose["zh"], 8000),
        "ru_8000": sized(prose["ru"], 8000),
    }
    out = {}
    for name, text in cases.items():
        out[f"text {name}"] = {
            "old_us": per_call_us(lambda t=text: old_text(t), repeat),
            "new_us": per_call_us(lambda t=text: estimated_text_tokens(t), repeat),
        }
    turns = [
        {"role": ("user", "assistant")[i % 2], "content": sized(prose["en"], 400)}
        for i in range(10)
    ]
    chat = {"messages": turns}
    out["prompt en 10 turns"] = {
        "old_us": per_call_us(lambda: old_prompt(chat), repeat),
        "new_us": per_call_us(lambda: estimated_prompt_tokens(chat), repeat),
    }
    zh_chat = {"messages": [{"role": "user", "content": cases["zh_8000"]}]}
    out["prompt zh 8000"] = {
        "old_us": per_call_us(lambda: old_prompt(zh_chat), repeat),
        "new_us": per_call_us(lambda: estimated_prompt_tokens(zh_chat), repeat),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bpe = _bpe()
    lines = counts(texts(), bpe)
    result: dict[str, Any] = {"machine": machine(), "languages": lines}
    result["errors"] = {name: errors(lines, name) for name in bpe}
    result["timings"] = timings(args.repeat)
    if args.json:
        dump_json(result)
        return
    refs = list(bpe)
    head = ["file", "lang", "chars", "old", "new", "wordpiece", "at_most", *refs]
    print(" ".join(f"{h:>12}" for h in head))
    for line in lines:
        print(" ".join(f"{line[h]!s:>12}" for h in head))
    for ref, table in result["errors"].items():
        print(f"\nagainst {ref} (over {len(lines)} file-language groups):")
        for name, stats in table.items():
            print(f"  {name:>10}: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    print("\nµs a call (best of runs):")
    for case, t in result["timings"].items():
        print(f"  {case:>20}: old {t['old_us']:.3f}  new {t['new_us']:.3f}")
    print(json.dumps(result["machine"]))


if __name__ == "__main__":
    main()
