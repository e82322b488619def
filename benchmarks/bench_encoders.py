"""Benchmark the built-in encoders: load time, batch-1 latency by prompt length,
batch-32 throughput, fidelity to MiniLM fp32, and CLINC150 intent accuracy.

    .venv/bin/python benchmarks/bench_encoders.py [--json] [--markdown docs/benchmarks.md]

Texts come from /work/shared/data (CLINC150 val for short prompts, MMLU dev for medium
and long ones; override with LLMROUTE_DATA). Embeddings for the accuracy check are kept
in a CachedEncoder under the cache dir, so reruns are fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llmroute.encoders import CachedEncoder, Encoder, default_cache_dir
from llmroute.encoders.builtin import _minilm
from llmroute.encoders.static import StaticEncoder
from llmroute.encoders.tokenize import WordPiece

DATA = Path(os.environ.get("LLMROUTE_DATA", "/work/shared/data"))
TOKENIZER = Path(__file__).resolve().parents[1] / "src/llmroute/encoders/data/tokenizer.json"
LEGEND = """\
- `load_first_s`: first load into an empty cache dir (builds and writes the ONNX graph;
  int8 also quantises); `load_warm_s`: a new session from the cached file.
- `p50/p99_ms`: batch-1 `encode` calls, the encoders taking turns so they share the
  machine's load; prompts bucketed by WordPiece length: ~10 tokens from CLINC150 val,
  ~60 and >=240 tokens (cut to 256) from MMLU dev.
- `batch32_texts_per_s`: 192 texts, 64 from each bucket, in calls of 32.
- `cos_mean/min`: cosine of int8 to fp32 vectors over 300 texts. The static model lives in
  another (256-d) space, so `pairwise_sim_corr` is the Pearson correlation of its pairwise
  cosine similarities with fp32's over the same texts.
- `clinc_centroid_acc`: CLINC150 train -> val, in-scope only (3,000 val texts), nearest
  normalised class centroid (a crude classifier; a learned head does better).
"""
BUCKETS = {"~10 tok": (6, 14), "~60 tok": (50, 70), "~250 tok": (240, 10**6)}


def read_jsonl(path: Path, key: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if r.get(key)]


def bucketed_texts() -> dict[str, list[str]]:
    wp = WordPiece(TOKENIZER, 10**6, "head")
    pool = [r["text"] for r in read_jsonl(DATA / "clinc150/val.jsonl", "text")]
    pool += [r["prompt"] for r in read_jsonl(DATA / "mmlu/mmlu_dev.jsonl", "prompt")]
    lengths = [len(ids) for ids in wp.encode(pool)]
    out: dict[str, list[str]] = {}
    for name, (lo, hi) in BUCKETS.items():
        out[name] = [t for t, n in zip(pool, lengths, strict=True) if lo <= n <= hi][:200]
    return out


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def latencies_ms(
    encoders: dict[str, Encoder], texts: list[str], calls: int
) -> dict[str, list[float]]:
    """Batch-1 call times, the encoders taking turns so they share the machine's load."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for text in texts[:5]:
        for enc in encoders.values():
            enc.encode([text])
    for text in (texts * (calls // max(len(texts), 1) + 1))[:calls]:
        for name, enc in encoders.items():
            times[name].append(timed(lambda e=enc, t=text: e.encode([t])) * 1e3)
    return times


def p50_p99(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def throughput(enc: Encoder, texts: list[str]) -> float:
    enc.encode(texts[:32])
    spent = sum(timed(lambda i=i: enc.encode(texts[i : i + 32])) for i in range(0, len(texts), 32))
    return len(texts) / spent


def load_times(name: str) -> tuple[float, float, Encoder]:
    """(first load incl. export into an empty cache, warm load from the cache)."""
    if name == "static":
        first = timed(StaticEncoder)
        return first, timed(StaticEncoder), StaticEncoder()
    precision = "fp32" if name == "minilm" else "int8"
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-bench-"))
    try:
        first = timed(lambda: _minilm(precision, 256, "head", tmp, None))  # type: ignore[arg-type]
    finally:
        shutil.rmtree(tmp)
    cache = default_cache_dir()
    _minilm(precision, 256, "head", cache, None)  # type: ignore[arg-type]
    warm_start = time.perf_counter()
    enc = _minilm(precision, 256, "head", cache, None)  # type: ignore[arg-type]
    return first, time.perf_counter() - warm_start, enc


def centroid_accuracy(enc: Encoder, cache: Path) -> float:
    train = [r for r in read_jsonl(DATA / "clinc150/train.jsonl", "text") if r["intent"] != "oos"]
    val = [r for r in read_jsonl(DATA / "clinc150/val.jsonl", "text") if r["intent"] != "oos"]
    cached = CachedEncoder(enc, cache)
    xtr = cached.encode([r["text"] for r in train])
    xva = cached.encode([r["text"] for r in val])
    labels = sorted({r["intent"] for r in train})
    index = {label: i for i, label in enumerate(labels)}
    ytr = np.array([index[r["intent"]] for r in train])
    centroids = np.zeros((len(labels), xtr.shape[1]), dtype=np.float32)
    np.add.at(centroids, ytr, xtr)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    pred = (xva @ centroids.T).argmax(axis=1)
    return float(np.mean(pred == np.array([index[r["intent"]] for r in val])))


def fidelity(enc: Encoder, ref: Encoder, texts: list[str]) -> dict[str, float]:
    a, b = enc.encode(texts), ref.encode(texts)
    if a.shape == b.shape:
        cos = np.einsum("ij,ij->i", a, b)
        return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}
    # different spaces (static, 256-d): agreement of pairwise similarities instead
    iu = np.triu_indices(len(texts), 1)
    r = np.corrcoef((a @ a.T)[iu], (b @ b.T)[iu])[0, 1]
    return {"pairwise_sim_corr": float(r)}


def run(names: list[str], quick: bool) -> dict[str, Any]:
    buckets = bucketed_texts()
    mixed = [t for texts in buckets.values() for t in texts[:64]]
    fid_texts = [t for texts in buckets.values() for t in texts[:100]]
    results: dict[str, Any] = {}
    encoders: dict[str, Encoder] = {}
    for name in names:
        first, warm, enc = load_times(name)
        encoders[name] = enc
        results[name] = {"load_first_s": first, "load_warm_s": warm}
    for i, (bucket, texts) in enumerate(buckets.items()):
        calls = (60 if quick else 200) // (2 if i == 2 else 1)
        for name, times in latencies_ms(encoders, texts, calls).items():
            p50, p99 = p50_p99(times)
            results[name][f"p50_ms {i} {bucket}"] = p50
            results[name][f"p99_ms {i} {bucket}"] = p99
    for name, enc in encoders.items():
        results[name]["batch32_texts_per_s"] = throughput(enc, mixed)
    if "minilm" in encoders:
        for name, enc in encoders.items():
            if name != "minilm":
                results[name].update(fidelity(enc, encoders["minilm"], fid_texts))
    if not quick:
        for name, enc in encoders.items():
            results[name]["clinc_centroid_acc"] = centroid_accuracy(
                enc, default_cache_dir() / "embeddings"
            )
    return results


def machine() -> str:
    cpu = "unknown CPU"
    info = Path("/proc/cpuinfo")
    if info.exists():
        found = re.search(r"model name\s*:\s*(.+)", info.read_text())
        cpu = found.group(1).strip() if found else cpu
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs (nproc), {cpu}, Python {platform.python_version()}, "
        f"load average {load} at the end (shared machine: latencies are noisy)"
    )


def table(results: dict[str, Any]) -> str:
    cols = sorted({k for row in results.values() for k in row}, key=_col_order)
    lines = ["| metric | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for col in cols:
        cells = [_fmt(results[n].get(col)) for n in results]
        label = re.sub(r" \d ", " ", col)  # the digit only orders the length buckets
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _col_order(col: str) -> tuple[int, str]:
    order = ["load", "p50", "p99", "batch32", "cos", "pairwise", "clinc"]
    return next((i for i, p in enumerate(order) if col.startswith(p)), 99), col


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 and value > 0.5 else f"{value:.3g}"
    return str(value)


def write_section(path: Path, body: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    section = f"## Encoders\n\n{body.strip()}\n"
    pattern = re.compile(r"^## Encoders\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="fewer calls, no accuracy check")
    parser.add_argument("--markdown", type=Path, help="write the `## Encoders` section here")
    parser.add_argument("--encoders", default="minilm,minilm-int8,static")
    args = parser.parse_args()
    results = run(args.encoders.split(","), args.quick)
    if args.json:
        print(json.dumps({"machine": machine(), "results": results}, indent=1))
    else:
        print(machine())
        print(table(results))
    if args.markdown:
        body = (
            f"Measured {dt.date.today().isoformat()} on {machine()}.\n\n"
            "Command: `.venv/bin/python benchmarks/bench_encoders.py "
            f"--markdown {args.markdown}`\n\n{table(results)}\n\n{LEGEND}"
        )
        write_section(args.markdown, body)


if __name__ == "__main__":
    main()
