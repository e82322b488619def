"""How often would a semantic response cache serve one user's answer to a different question?

    .venv/bin/python benchmarks/bench_semantic_cache.py [--json]
        [--datasets clinc150,banking77] [--encoders static,minilm-int8]

Prints a "## Semantic cache: how often distinct queries hit each other" section for
docs/benchmarks.md (--json: one JSON object with all the numbers instead).

A semantic cache answers a request from an earlier cached one when the embedding of its
last user message lies within cosine similarity `threshold` of the earlier one's. This
script replays real user queries through such a cache, with nothing but distinct queries:

- Data: CLINC150 val (all 3,100 rows, including the 100 out-of-scope ``oos`` ones) and a
  random sample (seed 0) of 3,000 rows of Banking77 train, from /work/shared/data
  (override with LLMROUTE_DATA). A missing file is reported and skipped.
- Rows are shuffled (numpy seed 0) and exact duplicates after lower-casing and
  whitespace-collapsing are dropped (first occurrence kept): an exact cache handles those.
- Queries are streamed in that order; for each query i the nearest EARLIER query j < i
  (maximum cosine) is found, as a cache holding every earlier query would find it.
- Per threshold: hit rate = share of queries (all but the first) whose nearest earlier
  query has similarity >= threshold; of those hits, the share whose nearest earlier query
  has a DIFFERENT intent (the cache certainly serves a wrong answer), the share with the
  SAME intent (same intent, not necessarily the same question: see the example pairs),
  and, for CLINC150, the share where either query is out-of-scope (``oos`` is a catch-all,
  so its label says nothing about whether two queries ask the same thing).
- Example hit pairs (seeded choice) at 0.95 and 0.97, so a reader can judge whether
  same-intent hits really ask the same question.
- The same replay with the cache's word-pair guard (`min_word_overlap`, as shipped):
  the nearest earlier query among those sharing at least that Jaccard share of their
  word-bigram signatures (`llmroute.state.semantic_index.word_pairs`).
- Lookup cost of the cache's nearest-neighbour search in numpy: one float32 query
  against N cached vectors (``sims = M @ q; argmax``), N in 64..4096, with M held as
  float32 and as float16 converted per call; 2,000 timed calls after 200 warm-up.

Encoders are the built-in ``static`` and ``minilm-int8`` (its ONNX file is built on first
use, which can take a minute). Rows are checked to be unit-norm and normalised if not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from _common import BANKING, CLINC, dump_json, log, machine, percentiles

from llmroute.encoders.builtin import load_builtin
from llmroute.registry.schema import SemanticCacheSettings
from llmroute.state.contrast import guarded_terms
from llmroute.state.semantic_index import word_pairs

Matrix = npt.NDArray[np.float32]

DATASETS: dict[str, tuple[Path, int | None]] = {
    "clinc150": (CLINC / "val.jsonl", None),
    "banking77": (BANKING / "train.jsonl", 3000),
}
ENCODER_NAMES = ("static", "minilm-int8")
THRESHOLDS = (0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
EXAMPLE_THRESHOLDS = (0.95, 0.97)
GUARD = SemanticCacheSettings().min_word_overlap  # the word-pair guard, as shipped
EXAMPLES = 8
OOS = "oos"
SEED = 0
ENCODE_BATCH = 64
SIM_BLOCK = 1024
LOOKUP_SIZES = (64, 256, 1024, 4096)
LOOKUP_WARMUP = 200
LOOKUP_REPEATS = 2000
NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Dataset:
    name: str
    texts: list[str]
    intents: list[str]
    rows_read: int
    rows_sampled: int

    @property
    def has_oos(self) -> bool:
        return OOS in self.intents


def comma_list(choices: tuple[str, ...]) -> Any:
    def parse(value: str) -> list[str]:
        names = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {value!r}")
        return names

    return parse


def canonical(text: str) -> str:
    return " ".join(text.lower().split())


def load_dataset(name: str) -> Dataset | None:
    """Read, sample (seed 0), shuffle (seed 0) and de-duplicate one dataset."""
    path, sample = DATASETS[name]
    if not path.is_file():
        log(f"{name}: {path} not found; skipping this dataset")
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    rows = [r for r in rows if isinstance(r.get("text"), str) and r.get("intent") is not None]
    read = len(rows)
    if sample is not None and sample < len(rows):
        picked = np.random.default_rng(SEED).choice(len(rows), size=sample, replace=False)
        rows = [rows[i] for i in sorted(picked)]
    sampled = len(rows)
    order = np.random.default_rng(SEED).permutation(len(rows))
    seen: set[str] = set()
    texts: list[str] = []
    intents: list[str] = []
    for i in order:
        key = canonical(rows[i]["text"])
        if not key or key in seen:
            continue
        seen.add(key)
        texts.append(rows[i]["text"])
        intents.append(str(rows[i]["intent"]))
    return Dataset(name, texts, intents, read, sampled)


def embed(encoder_name: str, dataset: Dataset) -> tuple[Matrix, dict[str, Any]]:
    """Encode in batches of 64 (progress on stderr); check and, if needed, fix unit norms."""
    encoder = load_builtin(encoder_name)
    texts = dataset.texts
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, len(texts), ENCODE_BATCH):
        out[start : start + ENCODE_BATCH] = encoder.encode(texts[start : start + ENCODE_BATCH])
        done = min(start + ENCODE_BATCH, len(texts))
        if done == len(texts) or (start // ENCODE_BATCH) % 10 == 0:
            log(f"{dataset.name}/{encoder_name}: embedded {done}/{len(texts)}")
    seconds = time.perf_counter() - started
    norms = np.linalg.norm(out.astype(np.float64), axis=1)
    deviation = float(np.max(np.abs(norms - 1.0)))
    renormalised = deviation > NORM_TOLERANCE
    if renormalised:
        log(f"{dataset.name}/{encoder_name}: rows not unit-norm (max |norm-1| {deviation:.2e})")
        out /= np.maximum(norms, 1e-12)[:, None].astype(np.float32)
    info = {
        "identity": encoder.identity,
        "dim": encoder.dim,
        "encode_s": round(seconds, 2),
        "norm_min": round(float(norms.min()), 6),
        "norm_max": round(float(norms.max()), 6),
        "zero_rows": int(np.sum(norms == 0)),
        "renormalised": renormalised,
    }
    return out, info


def pair_bits(texts: list[str]) -> npt.NDArray[np.float32]:
    """Each text's word-pair signature as the cache computes it (`word_pairs`), unpacked
    to 0/1 columns."""
    packed = np.stack([word_pairs(t) for t in texts])
    return np.unpackbits(packed, axis=1).astype(np.float32)


def nearest_earlier(
    vectors: Matrix,
    pairs: npt.NDArray[np.float32] | None = None,
    min_overlap: float = 0.0,
    terms: npt.NDArray[np.int64] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """For each row i > 0, the max cosine to any row j < i and that j (row 0: -inf, -1);
    with `pairs`, only among rows whose word pairs overlap row i's by `min_overlap`
    (Jaccard), as the cache's guard allows; with `terms` (an id of each row's
    `guarded_terms`: numbers, negation, opposites), only among rows with the same."""
    n = len(vectors)
    best = np.full(n, -np.inf, dtype=np.float32)
    arg = np.full(n, -1, dtype=np.int64)
    sizes = None if pairs is None else pairs.sum(axis=1)
    for lo in range(1, n, SIM_BLOCK):
        hi = min(lo + SIM_BLOCK, n)
        sims = vectors[lo:hi] @ vectors[:hi].T
        rows = np.arange(lo, hi)[:, None]
        sims[np.arange(hi)[None, :] >= rows] = -np.inf  # only strictly earlier queries
        if pairs is not None and sizes is not None and min_overlap > 0:
            shared = pairs[lo:hi] @ pairs[:hi].T
            union = sizes[lo:hi, None] + sizes[None, :hi] - shared
            sims[shared < min_overlap * np.maximum(union, 1)] = -np.inf
        if terms is not None:
            sims[terms[lo:hi, None] != terms[None, :hi]] = -np.inf
        arg[lo:hi] = np.argmax(sims, axis=1)
        best[lo:hi] = sims[np.arange(hi - lo), arg[lo:hi]]
    return best, arg


@dataclass(frozen=True)
class Replay:
    best: npt.NDArray[np.float32]
    arg: npt.NDArray[np.int64]
    same: npt.NDArray[np.bool_]
    oos: npt.NDArray[np.bool_]


def replay(vectors: Matrix, dataset: Dataset, min_overlap: float = 0.0) -> Replay:
    """The replay; with `min_overlap`, with every guard the cache applies as shipped
    (the word pairs, and the numbers, negation and opposites of `guarded_terms`)."""
    pairs = pair_bits(dataset.texts) if min_overlap > 0 else None
    terms = None
    if min_overlap > 0:
        ids: dict[tuple[str, ...], int] = {}
        terms = np.array([ids.setdefault(guarded_terms(t), len(ids)) for t in dataset.texts])
    best, arg = nearest_earlier(vectors, pairs, min_overlap, terms)
    intents = np.asarray(dataset.intents, dtype=object)
    partner = intents[np.maximum(arg, 0)]
    same = (intents == partner) & (arg >= 0)
    oos = (intents == OOS) | (partner == OOS)
    return Replay(best, arg, same.astype(bool), oos.astype(bool))


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def threshold_rows(result: Replay) -> list[dict[str, Any]]:
    queries = len(result.best) - 1
    out = []
    for threshold in THRESHOLDS:
        hit = result.best >= np.float32(threshold)
        hits = int(hit.sum())
        oos = int((hit & result.oos).sum())
        different = int((hit & ~result.same & ~result.oos).sum())
        same = int((hit & result.same & ~result.oos).sum())
        out.append(
            {
                "threshold": threshold,
                "queries": queries,
                "hits": hits,
                "hit_rate": share(hits, queries),
                "different_intent": different,
                "different_share": share(different, hits),
                "same_intent": same,
                "same_share": share(same, hits),
                "oos_involved": oos,
                "oos_share": share(oos, hits),
            }
        )
    return out


def pick_examples(result: Replay, dataset: Dataset, threshold: float) -> dict[str, Any]:
    hit = result.best >= np.float32(threshold)
    kinds = {
        "same_intent": hit & result.same & ~result.oos,
        "different_intent": hit & ~result.same & ~result.oos,
    }
    if dataset.has_oos:
        kinds["oos_involved"] = hit & result.oos
    rng = np.random.default_rng(SEED)
    out: dict[str, Any] = {}
    for kind, mask in kinds.items():
        candidates = np.flatnonzero(mask)
        drawn = rng.choice(candidates, size=min(EXAMPLES, len(candidates)), replace=False)
        chosen = sorted((int(i) for i in drawn), key=lambda i: -float(result.best[i]))
        out[kind] = {
            "available": len(candidates),
            "pairs": [
                {
                    "similarity": round(float(result.best[i]), 4),
                    "query": dataset.texts[i],
                    "query_intent": dataset.intents[i],
                    "cached": dataset.texts[result.arg[i]],
                    "cached_intent": dataset.intents[result.arg[i]],
                }
                for i in chosen
            ],
        }
    return out


def run_dataset(dataset: Dataset, encoders: list[str]) -> dict[str, Any]:
    per_encoder: dict[str, Any] = {}
    for name in encoders:
        vectors, info = embed(name, dataset)
        result = replay(vectors, dataset)
        sims = result.best[1:].astype(np.float64)
        info["nearest_sim"] = {
            f"p{q}": round(float(np.percentile(sims, q)), 4) for q in (50, 90, 99)
        } | {"max": round(float(sims.max()), 4)}
        guarded = replay(vectors, dataset, GUARD)
        per_encoder[name] = {
            **info,
            "thresholds": threshold_rows(result),
            "thresholds_guarded": threshold_rows(guarded),
            "examples": {str(t): pick_examples(result, dataset, t) for t in EXAMPLE_THRESHOLDS},
            "examples_guarded": {
                str(t): pick_examples(guarded, dataset, t) for t in EXAMPLE_THRESHOLDS
            },
        }
    intents = dataset.intents
    return {
        "rows_read": dataset.rows_read,
        "rows_sampled": dataset.rows_sampled,
        "rows_after_dedup": len(dataset.texts),
        "duplicates_dropped": dataset.rows_sampled - len(dataset.texts),
        "intents": len(set(intents)),
        "oos_rows": intents.count(OOS),
        "encoders": per_encoder,
    }


def time_lookup(matrix: Matrix, query: Matrix, as_float16: bool) -> dict[str, float]:
    stored = matrix.astype(np.float16) if as_float16 else matrix
    times: list[float] = []
    for i in range(LOOKUP_WARMUP + LOOKUP_REPEATS):
        started = time.perf_counter_ns()
        sims = (stored.astype(np.float32) if as_float16 else stored) @ query
        k = int(np.argmax(sims))
        _best = sims[k]
        elapsed = time.perf_counter_ns() - started
        if i >= LOOKUP_WARMUP:
            times.append(elapsed / 1e3)
    return percentiles(times)


def lookup_costs(dims: list[int]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(SEED)
    out: list[dict[str, Any]] = []
    for dim in dims:
        for size in LOOKUP_SIZES:
            matrix = rng.standard_normal((size, dim)).astype(np.float32)
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
            query = rng.standard_normal(dim).astype(np.float32)
            query /= np.linalg.norm(query)
            for as_float16 in (False, True):
                store = "float16" if as_float16 else "float32"
                stats = time_lookup(matrix, query, as_float16)
                timed = stats.pop("n")  # `n` of percentiles() is the sample count
                out.append({"dim": dim, "n": size, "store": store, "timed_calls": timed, **stats})
    return out


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def threshold_table(data: dict[str, Any], has_oos: bool, key: str = "thresholds") -> list[str]:
    names = list(data["encoders"])
    header = ["threshold"]
    for name in names:
        header += [f"{name} hit rate", f"{name} diff-intent", f"{name} same-intent"]
        header += [f"{name} oos-involved"] if has_oos else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row_index, threshold in enumerate(THRESHOLDS):
        row = [f"{threshold:.2f}"]
        for name in names:
            r = data["encoders"][name][key][row_index]
            row += [
                f"{fmt(r['hit_rate'])} ({r['hits']}/{r['queries']})",
                f"{fmt(r['different_share'])} ({r['different_intent']})",
                f"{fmt(r['same_share'])} ({r['same_intent']})",
            ]
            row += [f"{fmt(r['oos_share'])} ({r['oos_involved']})"] if has_oos else []
        lines.append("| " + " | ".join(row) + " |")
    return lines


def example_lines(data: dict[str, Any], key: str = "examples", label: str = "") -> list[str]:
    lines: list[str] = []
    for name, enc in data["encoders"].items():
        for threshold, kinds in enc[key].items():
            for kind, found in kinds.items():
                shown = len(found["pairs"])
                lines += [
                    "",
                    f"{name}{label}, similarity >= {threshold}, {kind.replace('_', ' ')}: "
                    f"{shown} of {found['available']} hits",
                ]
                if not shown:
                    continue
                lines += [
                    "",
                    "| sim | query | cached earlier query | intents |",
                    "|---|---|---|---|",
                ]
                for p in found["pairs"]:
                    intents = p["query_intent"]
                    if p["cached_intent"] != p["query_intent"]:
                        intents += f" / {p['cached_intent']}"
                    lines.append(
                        f"| {p['similarity']:.3f} | {cell(p['query'])} | {cell(p['cached'])} "
                        f"| {intents} |"
                    )
    return lines


def dataset_section(name: str, data: dict[str, Any]) -> list[str]:
    has_oos = data["oos_rows"] > 0
    lines = [
        "",
        f"### {name}",
        "",
        f"{data['rows_after_dedup']} queries after dedup ({data['rows_read']} rows read, "
        f"{data['rows_sampled']} used, {data['duplicates_dropped']} exact duplicates dropped), "
        f"{data['intents']} intents"
        + (f", {data['oos_rows']} out-of-scope (oos)." if has_oos else "."),
        "",
    ]
    for enc_name, enc in data["encoders"].items():
        ns = enc["nearest_sim"]
        lines.append(
            f"- {enc_name} (`{enc['identity']}`, d={enc['dim']}): encoded in {enc['encode_s']} s; "
            f"row norms {enc['norm_min']}..{enc['norm_max']}"
            f"{' (renormalised)' if enc['renormalised'] else ''}; nearest-earlier similarity "
            f"p50 {ns['p50']}, p90 {ns['p90']}, p99 {ns['p99']}, max {ns['max']}"
        )
    lines += [
        "",
        *threshold_table(data, has_oos),
        "",
        f"With the cache's word-pair guard (`min_word_overlap` {GUARD:g}, as shipped: the "
        "nearest earlier query among those sharing that share of their word bigrams):",
        "",
        *threshold_table(data, has_oos, "thresholds_guarded"),
        "",
        "#### Example hit pairs",
        *example_lines(data),
        "",
        "#### Example hit pairs with the word-pair guard",
        *example_lines(data, "examples_guarded", " + guard"),
    ]
    return lines


def lookup_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "### Lookup cost (numpy, one query against N cached vectors)",
        "",
        f"`sims = M @ q; k = int(np.argmax(sims)); best = sims[k]`, {LOOKUP_REPEATS} timed calls "
        f"after {LOOKUP_WARMUP} warm-up; float16: `M16.astype(np.float32) @ q` per call.",
        "",
        "| d | N | store | p50 µs | p99 µs |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['dim']} | {r['n']} | {r['store']} | {r['p50_us']} | {r['p99_us']} |")
    return lines


def markdown(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    lines = [
        "## Semantic cache: how often distinct queries hit each other",
        "",
        f"- date: {m['date']}",
        f"- machine: {m['nproc']} CPUs, {m['cpu']}",
        f"- Python {m['python']}, numpy {np.__version__}",
        f"- command: `{m['command']}`",
        "- datasets: "
        + (
            ", ".join(
                f"{name} ({d['rows_after_dedup']} queries after dedup)"
                for name, d in payload["datasets"].items()
            )
            or "none found"
        ),
        "",
        "Queries shuffled (seed 0), exact duplicates (lower-cased, whitespace-collapsed) "
        "dropped, streamed in order; each query's nearest EARLIER query by cosine. "
        "Hit rate: share of queries (all but the first) whose nearest earlier query is at "
        "or above the threshold (count hits/queries). Diff-intent / same-intent / "
        "oos-involved: shares of those hits (counts) whose nearest earlier query has a "
        "different intent (certainly a wrong answer), the same intent (not necessarily the "
        "same question), or where either query is out-of-scope (label uninformative).",
    ]
    for name, data in payload["datasets"].items():
        lines += dataset_section(name, data)
    for name in payload["skipped"]:
        lines += ["", f"### {name}", "", "Skipped: data file not found."]
    lines += lookup_table(payload["lookup"])
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument(
        "--datasets", type=comma_list(tuple(DATASETS)), default=list(DATASETS), metavar="LIST"
    )
    parser.add_argument(
        "--encoders", type=comma_list(ENCODER_NAMES), default=list(ENCODER_NAMES), metavar="LIST"
    )
    args = parser.parse_args()
    payload: dict[str, Any] = {"machine": machine(), "datasets": {}, "skipped": []}
    for name in args.datasets:
        dataset = load_dataset(name)
        if dataset is None:
            payload["skipped"].append(name)
            continue
        payload["datasets"][name] = run_dataset(dataset, args.encoders)
    dims = sorted({load_builtin(name).dim for name in args.encoders})
    log(f"timing lookups for d in {dims}")
    payload["lookup"] = lookup_costs(dims)
    if args.json:
        dump_json(payload)
    else:
        print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
