"""Jailbreak and prompt-injection detection: one linear model over embedding + n-grams.

The detector scores P(attack) for a text from two views: the request embedding the router
computes anyway (what the text is about: role-play wrapper, harmful goal) and hashed word
and character n-grams (`llmroute.safety.lexical`: template wording, instructions
addressed to the assistant, adversarial token soup). One logistic regression over both
beat either alone on validation (numbers: docs/benchmarks.md, "Safety detector").
Serving it costs a dot product with the embedding and tens of microseconds of hashing;
with the nearest-known-text columns (`llmroute.safety.neighbours`, when cross-validation
chooses them) one more product with the training rows' embeddings.

Data (`read_safety_data`): JSONL with ``text`` and ``label``; ``jailbreak`` and
``injection`` are attacks, ``benign`` is not, any other label (``harmful``: a bare
harmful request with no jailbreak wrapper) is kept apart and only reported. Rows carry a
``group`` (else the SHA-1 of their normalised text); the split is by group:
``sha1(f"s{seed}:{group}") % 100`` < 60 train, < 80 validation, else test. The test side
is never read by training: the regularisation, the embedding's weight and the weight of
the rare ``injection`` rows are chosen by 5-fold group cross-validation over train +
validation, the threshold is calibrated on the chosen setting's out-of-fold scores, and
the shipped model is fitted on train + validation; `evaluate_detector` on the test side
gives the honest numbers.

Long texts: a text is scored as the max over its `windows` (size 1000, stride 750, at
most 16; in Latin characters, a character of another script counting 4), so an injection
buried in a long document is read at prompt size. The model is
trained on each attack's first window (a long jailbreak's later windows need not hold the
attack) and on every window of each benign text (each is a window the max can flag).

An artifact is ``detector.json`` (encoder identity, threshold, metrics) and
``arrays.npz`` (float16 weights and neighbour references, loaded without pickle).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
import unicodedata
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmroute import __version__
from llmroute.artifact_files import check_folder, missing_meta, write_artifact
from llmroute.blas import one_blas_thread
from llmroute.encoders.base import Encoder, weights_identity, without_credentials
from llmroute.errors import ConfigError, DataError
from llmroute.jsonl import read_jsonl
from llmroute.safety.attack_rules import match_rules
from llmroute.safety.lexical import (
    DEFAULT_BUCKETS,
    bucket_counts,
    hashed_ids,
    lexical_matrix,
)
from llmroute.safety.neighbours import (
    Neighbours,
    reference_rows,
    similarity_columns,
    unit_rows,
)
from llmroute.safety.token_bag import TokenBag, load_token_bag
from llmroute.safety.windows import windows
from llmroute.scoring.logreg import fit_softmax

__all__ = [
    "ATTACK_LABELS",
    "SAFETY_LABELS",
    "WINDOW",
    "InjectionDetector",
    "SafetyData",
    "SafetyReport",
    "TrainReport",
    "builtin_detector_dir",
    "evaluate_detector",
    "load_detector",
    "read_safety_data",
    "save_detector",
    "score_texts",
    "split_sides",
    "train_detector",
    "training_pool",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
Progress = Callable[[str], None]

SAFETY_LABELS = ("jailbreak", "injection", "benign")
"""The labels the detector learns; rows with any other label are reported apart."""
ATTACK_LABELS = frozenset({"jailbreak", "injection"})
WINDOW = (1000, 750, 16)
"""(size, stride, max_windows) of the windows a long text is scored over."""
TARGET_FPR = 0.015
"""The threshold flags at most this share of the out-of-fold negatives: 1.5%, a margin
under the 2% target so that the held-out false-positive rate stays below it."""
HARD_NEGATIVE_SOURCES = ("InjecGuard/NotInject", "XSTest")
C_VALUES = (30.0, 100.0)
EMBEDDING_SCALES = (0.5, 1.0)
INJECTION_WEIGHTS = (1.0, 3.0)
"""Candidate weights of ``injection`` rows (a rare label: 6% of the shipped attacks)."""
NEIGHBOUR_SCALES = (0.0, 1.0)
"""Candidate scales of the nearest-known-text columns (`llmroute.safety.neighbours`) when
training is asked to try them; 0 leaves them out. Off by default: they raised the
out-of-fold TPR on the shipped data but flagged fewer hand-written injections unlike its
templates (docs/benchmarks.md, "Safety detector")."""
MIN_PER_CLASS = 10
FOLDS = 5
META_FILE = "detector.json"
ARRAYS_FILE = "arrays.npz"
FORMAT = 1
_BUILTIN_DIRS = {
    "builtin:static": "injection-static",
    "builtin:minilm-int8": "injection-minilm-int8",
}

# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class SafetyData:
    """Labelled texts; `groups` keep near-duplicates on one side of the split."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]
    groups: tuple[str, ...]
    sources: tuple[str, ...]
    categories: tuple[str, ...]
    weights: tuple[float, ...] = ()
    """Each row's sample weight in `train_detector`'s fits (empty: 1 for every row); no
    metric or threshold weighs rows by it."""

    def __post_init__(self) -> None:
        if not self.weights:
            object.__setattr__(self, "weights", (1.0,) * len(self.texts))
        elif len(self.weights) != len(self.texts):
            raise ValueError(f"{len(self.weights)} weights for {len(self.texts)} rows")
        elif not all(0 < w < math.inf for w in self.weights):
            raise ValueError("every weight must be a positive finite number")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | IntArray) -> SafetyData:
        idx = [int(i) for i in indices]
        pick: Callable[[tuple[str, ...]], tuple[str, ...]] = lambda xs: tuple(xs[i] for i in idx)  # noqa: E731
        return SafetyData(
            pick(self.texts),
            pick(self.labels),
            pick(self.groups),
            pick(self.sources),
            pick(self.categories),
            tuple(self.weights[i] for i in idx),
        )

    @property
    def is_detector_row(self) -> BoolArray:
        return np.array([label in SAFETY_LABELS for label in self.labels], dtype=np.bool_)

    @property
    def is_attack(self) -> BoolArray:
        return np.array([label in ATTACK_LABELS for label in self.labels], dtype=np.bool_)

    @property
    def is_hard_negative(self) -> BoolArray:
        """Benign rows built to look like attacks: NotInject, XSTest, or tagged
        ``category == "hard_negative_keyword"``."""
        return np.array(
            [
                label == "benign"
                and (source.startswith(HARD_NEGATIVE_SOURCES) or cat == "hard_negative_keyword")
                for label, source, cat in zip(
                    self.labels, self.sources, self.categories, strict=True
                )
            ],
            dtype=np.bool_,
        )


def _normalised_sha1(text: str) -> str:
    norm = " ".join(unicodedata.normalize("NFKC", text).lower().split())
    return hashlib.sha1(norm.encode("utf-8"), usedforsecurity=False).hexdigest()


def read_safety_data(path: str | os.PathLike[str], *more: str | os.PathLike[str]) -> SafetyData:
    """Read JSONL lines with ``text`` (a string) and ``label`` (a non-empty string; the
    detector's labels in any case, ``Jailbreak`` read as ``jailbreak`` rather than kept
    apart as another label); ``source``, ``category``, ``group`` and ``weight`` are
    optional (group: the SHA-1 of the NFKC lower-cased, whitespace-collapsed text;
    weight: a positive number, 1 if absent, the row's sample weight in the fit).
    Several files are concatenated. A bad line raises `DataError` naming the file and
    line; so does a file with no rows."""
    rows: list[tuple[str, str, str, str, str, float]] = []
    for one in (path, *more):
        rows += read_jsonl(
            one,
            _parse_line,
            what="safety data",
            empty="no rows (expected JSON lines with 'text' and 'label')",
        )
    texts, labels, groups, sources, categories, weights = zip(*rows, strict=True)
    return SafetyData(texts, labels, groups, sources, categories, weights)


def _parse_line(
    record: dict[str, Any], file: str, number: int
) -> tuple[str, str, str, str, str, float]:
    for name in ("text", "label"):
        if name not in record:
            raise DataError(f"missing field '{name}'", file=file, line=number)
    text, label = record["text"], record["label"]
    if not isinstance(text, str):
        raise DataError("field 'text' must be a string", file=file, line=number)
    if not isinstance(label, str) or not label.strip():
        raise DataError(
            f"field 'label' must be a non-empty string (the detector learns "
            f"{', '.join(SAFETY_LABELS)}), got {json.dumps(label)}",
            file=file,
            line=number,
        )
    label = label.strip()
    if label.lower() in SAFETY_LABELS:  # `Jailbreak` is that label, not another one
        label = label.lower()
    group = record.get("group")
    return (
        text,
        label,
        str(group) if group is not None else _normalised_sha1(text),
        str(record.get("source") or ""),
        str(record.get("category") or ""),
        _weight(record.get("weight", 1.0), file, number),
    )


def _weight(value: object, file: str, number: int) -> float:
    weight = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            weight = float(value)
        except OverflowError:  # an integer past float's range, as 1e400 reads: infinite
            weight = math.inf
    if not 0 < weight < math.inf:
        raise DataError(
            f"field 'weight' must be a positive number, got {json.dumps(value)}",
            file=file,
            line=number,
        )
    return weight


def split_sides(data: SafetyData, *, seed: int = 0) -> npt.NDArray[np.int8]:
    """0 (train), 1 (validation) or 2 (test) for each row: ``sha1(f"s{seed}:{group}")``
    mod 100 below 60, below 80, else. Fixed for a seed; a group never straddles sides."""
    out = np.empty(len(data), dtype=np.int8)
    for row, group in enumerate(data.groups):
        digest = hashlib.sha1(f"s{seed}:{group}".encode(), usedforsecurity=False).hexdigest()
        bucket = int(digest, 16) % 100
        out[row] = 0 if bucket < 60 else (1 if bucket < 80 else 2)
    return out


# ---------------------------------------------------------------- the detector


def _sigmoid(z: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


@dataclass(frozen=True)
class InjectionDetector:
    """P(attack) = sigmoid(embedding · w_emb [+ tokens(text) · w_tok] [+ neighbours] +
    lexical(text) · w_lex + bias), where tokens is the optional `TokenBag` view (MiniLM's
    input token vectors) and neighbours the optional similarity to the nearest known
    attack and benign text (`Neighbours`).

    Flag a text when `score` reaches `threshold`. `window` is the (size, stride,
    max_windows) its long texts are scored over: ``max`` of the windows' scores.
    """

    encoder_identity: str
    threshold: float
    emb_weights: F32
    lex_weights: F32
    bias: float
    window: tuple[int, int, int] = WINDOW
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)
    token_weights: F32 | None = None
    token_bag: TokenBag | None = field(default=None, compare=False, repr=False)
    neighbours: Neighbours | None = field(default=None, compare=False, repr=False)
    trained_on: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """What it was trained on: ``seen_prompts``, the hashes of the texts it was fitted or
    chose its settings with (`llmroute.difficulty.calibration.seen_prompts`), which
    `llmroute eval-safety` leaves out; empty for an artifact from before they were kept."""

    @property
    def buckets(self) -> int:
        return int(self.lex_weights.shape[0])

    def lexical_logits(self, texts: Sequence[str]) -> F64:
        out = np.empty(len(texts), dtype=np.float64)
        for row, text in enumerate(texts):
            nonzero, counts = bucket_counts(hashed_ids(text, self.buckets), self.buckets)
            values = 1.0 + np.log(counts)
            norm = math.sqrt(float(values @ values))
            out[row] = float(self.lex_weights[nonzero] @ values) / norm if norm else 0.0
        return out

    def score(self, texts: Sequence[str], embeddings: npt.NDArray[np.floating[Any]]) -> F64:
        """P(attack) in [0, 1] for each text, given its embedding row (n, dim)."""
        emb = np.asarray(embeddings, dtype=np.float32).reshape(len(texts), -1)
        if emb.shape[1] != self.emb_weights.shape[0]:
            raise ValueError(
                f"embeddings have dim {emb.shape[1]}, the detector expects "
                f"{self.emb_weights.shape[0]} (encoder {self.encoder_identity})"
            )
        logits = emb.astype(np.float64) @ self.emb_weights + self.lexical_logits(texts)
        if self.token_weights is not None:
            if self.token_bag is None:
                raise ValueError("this detector was trained with a token view; load it with one")
            logits += self.token_bag.features(texts) @ self.token_weights
        if self.neighbours is not None:
            logits += self.neighbours.logits(emb)
        return _sigmoid(logits + self.bias)

    def match_rules(self, text: str) -> str | None:
        """The name of the first known-attack marker in `text`, else None
        (`llmroute.safety.attack_rules`)."""
        return match_rules(text)


def score_texts(
    detector: InjectionDetector,
    texts: Sequence[str],
    encoder: Encoder,
    *,
    batch: int = 256,
    progress: Progress | None = None,
) -> F64:
    """Each text's score: the max over its windows (one window for a short text)."""
    size, stride, most = detector.window
    pieces: list[str] = []
    owner: list[int] = []
    for row, text in enumerate(texts):
        found, _ = windows(text, size, stride, most)
        pieces.extend(found)
        owner.extend([row] * len(found))
    scores = np.empty(len(pieces), dtype=np.float64)
    for start in range(0, len(pieces), batch):
        chunk = pieces[start : start + batch]
        scores[start : start + len(chunk)] = detector.score(chunk, encoder.encode(chunk))
        if progress is not None:
            progress(f"scored {start + len(chunk)}/{len(pieces)} windows")
    out = np.full(len(texts), -np.inf)
    np.maximum.at(out, np.asarray(owner, dtype=np.intp), scores)
    return out


# ---------------------------------------------------------------- metrics


def _auc(scores: F64, positive: BoolArray) -> float:
    """Area under the ROC curve (ties count half)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores[np.r_[False, np.diff(scores[order]) == 0]]):
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def threshold_at_fpr(scores: F64, positive: BoolArray, target: float) -> float:
    """The lowest threshold (flag when score >= it) that flags at most `target` of the
    negatives."""
    negatives = np.sort(scores[~positive])[::-1]
    allowed = math.floor(target * negatives.size + 1e-9)
    if allowed >= negatives.size:
        return float(negatives[-1]) if negatives.size else 0.5
    return float(np.nextafter(negatives[allowed], np.inf))


def _rates(scores: F64, positive: BoolArray, threshold: float) -> dict[str, float]:
    flagged = scores >= threshold
    tp = int((flagged & positive).sum())
    fp = int((flagged & ~positive).sum())
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return {
        "threshold": threshold,
        "tpr": tp / n_pos if n_pos else float("nan"),
        "fpr": fp / n_neg if n_neg else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
    }


@dataclass(frozen=True)
class SafetyReport:
    """Detector metrics on one set of rows at `threshold` (shares as fractions 0..1)."""

    n: int
    n_attack: int
    n_benign: int
    tpr: float
    fpr: float
    precision: float
    auc: float
    threshold: float
    table: tuple[dict[str, float], ...]
    hard_negative_n: int
    hard_negative_fpr: float
    other_labels: dict[str, dict[str, float]]
    per_source: dict[str, dict[str, float]]
    rule_hits: dict[str, int]
    with_rules: dict[str, float] = field(default_factory=dict)
    """TPR, FPR and hard-negative FPR of what the safety layer flags: the model at the
    threshold or any rule (`llmroute.safety.attack_rules`)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_attack": self.n_attack,
            "n_benign": self.n_benign,
            "tpr": self.tpr,
            "fpr": self.fpr,
            "precision": self.precision,
            "auc": self.auc,
            "threshold": self.threshold,
            "table": list(self.table),
            "hard_negative_n": self.hard_negative_n,
            "hard_negative_fpr": self.hard_negative_fpr,
            "other_labels": self.other_labels,
            "per_source": self.per_source,
            "rule_hits": self.rule_hits,
            "with_rules": self.with_rules,
        }


def _report(
    data: SafetyData, scores: F64, threshold: float, rules: Sequence[str | None]
) -> SafetyReport:
    detector_rows = data.is_detector_row
    positive = data.is_attack[detector_rows]
    det_scores = scores[detector_rows]
    main = _rates(det_scores, positive, threshold)
    hard = data.is_hard_negative
    table = tuple(
        _rates(det_scores, positive, float(t)) for t in (0.1, 0.3, 0.5, 0.7, 0.9, threshold)
    )
    other: dict[str, dict[str, float]] = {}
    for label in sorted(set(data.labels) - set(SAFETY_LABELS)):
        mine = np.array([lab == label for lab in data.labels])
        other[label] = {"n": int(mine.sum()), "flagged": float((scores[mine] >= threshold).mean())}
    per_source: dict[str, dict[str, float]] = {}
    attack = data.is_attack
    for source in sorted({s for s, a in zip(data.sources, attack, strict=True) if a}):
        mine = attack & np.array([s == source for s in data.sources])
        per_source[source] = {
            "n": int(mine.sum()),
            "tpr": float((scores[mine] >= threshold).mean()),
        }
    hits: dict[str, int] = {}
    for name, label in zip(rules, data.labels, strict=True):
        if name is not None:
            key = f"{name}/{label}"
            hits[key] = hits.get(key, 0) + 1
    ruled = np.array([name is not None for name in rules], dtype=np.bool_)
    flagged = (scores >= threshold) | ruled
    with_rules = {
        "tpr": float(flagged[detector_rows][positive].mean()) if positive.any() else math.nan,
        "fpr": float(flagged[detector_rows][~positive].mean()) if (~positive).any() else math.nan,
        "hard_negative_fpr": float(flagged[hard].mean()) if hard.any() else math.nan,
    }
    return SafetyReport(
        n=int(detector_rows.sum()),
        n_attack=int(positive.sum()),
        n_benign=int((~positive).sum()),
        tpr=main["tpr"],
        fpr=main["fpr"],
        precision=main["precision"],
        auc=_auc(det_scores, positive),
        threshold=threshold,
        table=table,
        hard_negative_n=int(hard.sum()),
        hard_negative_fpr=float((scores[hard] >= threshold).mean()) if hard.any() else math.nan,
        other_labels=other,
        per_source=per_source,
        rule_hits=hits,
        with_rules=with_rules,
    )


def evaluate_detector(
    detector: InjectionDetector,
    data: SafetyData,
    encoder: Encoder,
    *,
    threshold: float | None = None,
    progress: Progress | None = None,
) -> SafetyReport:
    """Score every row of `data` (max over windows) and report at `threshold` (default:
    the detector's). Pass ``data.subset(...)`` to evaluate one side of the split."""
    if weights_identity(encoder.identity) != weights_identity(detector.encoder_identity):
        raise ConfigError(
            f"detector was trained with encoder "
            f"{without_credentials(detector.encoder_identity)!r}, but the "
            f"encoder in use is {encoder.identity!r}"
        )
    scores = score_texts(detector, data.texts, encoder, progress=progress)
    rules = [detector.match_rules(text) for text in data.texts]
    return _report(data, scores, detector.threshold if threshold is None else threshold, rules)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainReport:
    """What training chose and why: every candidate's cross-validated numbers, and the
    chosen model's out-of-fold report (`validation`) at the calibrated threshold."""

    encoder_identity: str
    hyper: dict[str, float]
    validation: SafetyReport
    candidates: tuple[dict[str, float], ...]
    rows: dict[str, int]
    fit_seconds: float
    weights: dict[str, float] | None = None
    """Each label's sum of the rows' weights it was fitted with; None when every row
    weighed 1 (`_label_weights`)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder_identity,
            "hyper": self.hyper,
            "validation": self.validation.to_dict(),
            "candidates": list(self.candidates),
            "rows": self.rows,
            "weights": self.weights,
            "fit_seconds": self.fit_seconds,
        }


@dataclass(frozen=True)
class _Features:
    """Every window of the training pool, embedded and hashed once: what a row is scored
    by, and (`_training_windows`) what the model is fitted on."""

    emb: F32
    """The encoder's embedding, with the token-bag view appended when one is used."""
    lex: F32
    owner: IntArray
    first: IntArray
    unit: F32
    """The encoder's embedding alone, unit rows: what neighbours are found by."""
    group: IntArray
    """Each row's group, as an integer: neighbours of a row's own group are skipped."""


def _features(
    encoder: Encoder,
    token_bag: TokenBag | None,
    texts: Sequence[str],
    groups: Sequence[str],
    progress: Progress | None,
) -> _Features:
    size, stride, most = WINDOW
    pieces: list[str] = []
    owner: list[int] = []
    first: list[int] = []
    for row, text in enumerate(texts):
        found, _ = windows(text, size, stride, most)
        first.append(len(pieces))
        pieces.extend(found)
        owner.extend([row] * len(found))
    dim = encoder.dim + (token_bag.dim if token_bag is not None else 0)
    emb = np.empty((len(pieces), dim), dtype=np.float32)
    for start in range(0, len(pieces), 256):
        chunk = pieces[start : start + 256]
        emb[start : start + 256, : encoder.dim] = encoder.encode(chunk)
        if token_bag is not None:
            emb[start : start + 256, encoder.dim :] = token_bag.features(chunk)
        if progress is not None:
            progress(f"embedded {min(start + 256, len(pieces))}/{len(pieces)} windows")
    ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    return _Features(
        emb,
        lexical_matrix(pieces, DEFAULT_BUCKETS),
        np.asarray(owner, dtype=np.intp),
        np.asarray(first, dtype=np.intp),
        unit_rows(emb[:, : encoder.dim]),
        np.asarray([ids[g] for g in groups], dtype=np.intp),
    )


@dataclass(frozen=True)
class _Model:
    """One fitted candidate: the weights as stored (float16-rounded) and, when the
    neighbour columns are in, the training rows they are measured against."""

    emb: F32
    lex: F32
    bias: float
    references: IntArray | None = None
    neighbour_weights: F32 | None = None


def _neighbour_columns(
    feats: _Features, window_rows: IntArray, references: IntArray, y: BoolArray
) -> F32:
    """The windows' similarity to the nearest attack and benign reference (first windows
    of `references`), a window's own group left out."""
    return similarity_columns(
        feats.unit[window_rows],
        feats.unit[feats.first[references]],
        y[references],
        feats.group[feats.owner[window_rows]],
        feats.group[references],
    )


def _training_windows(feats: _Features, rows: IntArray, y: BoolArray) -> tuple[IntArray, IntArray]:
    """The windows of `rows` a model is fitted on, and the row of each: an attack's first
    window only (a long jailbreak's later windows may be plain text that happens to follow
    it), every window of a benign text, since a text is scored by the max over its windows
    and each benign window is a chance of a false positive. Against first windows only this
    raised the out-of-fold TPR at FPR <= 1.5% by 0.007 on average (docs/benchmarks.md)."""
    window_rows = np.flatnonzero(np.isin(feats.owner, rows))
    owner = feats.owner[window_rows]
    keep = (window_rows == feats.first[owner]) | ~y[owner]
    return window_rows[keep], owner[keep]


def _fit(
    feats: _Features,
    rows: IntArray,
    y: BoolArray,
    weights: F64,
    hyper: dict[str, float],
    seed: int = 0,
) -> _Model:
    """Logistic regression on the `_training_windows` of `rows`; weights rounded to float16
    as stored, so validation scores what ships. `y` and `weights` are indexed by row."""
    scale = hyper["embedding_scale"]
    near = hyper.get("neighbour_scale", 0.0)
    window_rows, owner = _training_windows(feats, rows, y)
    columns = [feats.emb[window_rows] * np.float32(scale), feats.lex[window_rows]]
    references = None
    if near > 0:
        references = reference_rows(rows, y, seed)
        near_columns = _neighbour_columns(feats, window_rows, references, y)
        columns.append(near_columns * np.float32(near))
    x = np.hstack(columns)
    labels = y[owner].astype(np.intp)
    model = fit_softmax(x, labels, 2, c=hyper["c"], sample_weight=weights[owner])
    w = (model.weights[:, 1] - model.weights[:, 0]).astype(np.float16).astype(np.float32)
    bias = float(np.float16(model.bias[1] - model.bias[0]))
    dim, lex = feats.emb.shape[1], feats.lex.shape[1]
    neighbour = w[dim + lex :] * np.float32(near) if references is not None else None
    return _Model(w[:dim] * np.float32(scale), w[dim : dim + lex], bias, references, neighbour)


def _window_max(feats: _Features, rows: IntArray, model: _Model, y: BoolArray) -> F64:
    """Each row's score: the max over its windows (as `score_texts` computes it)."""
    mask = np.isin(feats.owner, rows)
    logits = feats.emb[mask] @ model.emb + feats.lex[mask] @ model.lex + model.bias
    if model.references is not None and model.neighbour_weights is not None:
        near = _neighbour_columns(feats, np.flatnonzero(mask), model.references, y)
        logits = logits + near @ model.neighbour_weights
    out = np.full(int(feats.owner.max()) + 1, -np.inf)
    np.maximum.at(out, feats.owner[mask], _sigmoid(logits.astype(np.float64)))
    return out[rows]


def _folds(groups: Sequence[str], seed: int) -> IntArray:
    return np.array(
        [
            int(hashlib.sha1(f"f{seed}:{g}".encode(), usedforsecurity=False).hexdigest(), 16)
            % FOLDS
            for g in groups
        ],
        dtype=np.intp,
    )


def _out_of_fold(
    feats: _Features,
    y: BoolArray,
    weights: F64,
    folds: IntArray,
    hyper: dict[str, float],
    seed: int,
) -> F64:
    scores = np.empty(y.size, dtype=np.float64)
    for fold in range(FOLDS):
        fit_rows, held = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        if held.size:
            model = _fit(feats, fit_rows, y, weights, hyper, seed)
            scores[held] = _window_max(feats, held, model, y)
    return scores


def _check_counts(y: BoolArray) -> None:
    if int(y.sum()) < MIN_PER_CLASS or int((~y).sum()) < MIN_PER_CLASS:
        raise DataError(
            f"training needs at least {MIN_PER_CLASS} attack and {MIN_PER_CLASS} benign rows "
            f"outside the test split, got {int(y.sum())} and {int((~y).sum())}"
        )


def training_pool(
    data: SafetyData, *, seed: int = 0, extra: SafetyData | None = None
) -> SafetyData:
    """The rows `train_detector` fits on and chooses its settings with: the detector
    rows of `data`'s train and validation sides, then `extra`'s detector rows."""
    sides = split_sides(data, seed=seed)
    pool = data.subset(np.flatnonzero(data.is_detector_row & (sides < 2)))
    if extra is not None:
        pool = _concat(pool, extra.subset(np.flatnonzero(extra.is_detector_row)))
    return pool


def train_detector(
    data: SafetyData,
    encoder: Encoder,
    *,
    token_bag: TokenBag | None = None,
    seed: int = 0,
    neighbours: bool = False,
    extra: SafetyData | None = None,
    progress: Progress | None = None,
) -> tuple[InjectionDetector, TrainReport]:
    """Choose C, the embedding's weight and the weight of ``injection`` rows (and, with
    `neighbours`, whether to add the nearest-known-text columns) by 5-fold group
    cross-validation over the train + validation sides (out-of-fold TPR at `TARGET_FPR`,
    then AUC), calibrate the threshold on the chosen setting's out-of-fold scores, and
    fit the shipped model on train + validation. The test side is not read.

    `extra` rows join the training pool whatever their group's side: data kept apart
    from `data`'s split by its own (benign documents in other languages, whose held-out
    rows the caller leaves out).

    A row's `SafetyData.weights` entry multiplies its sample weight in every fit; the
    selection, the threshold and the report count each row once, so that a
    down-weighted set still has the threshold flag at most `TARGET_FPR` of it.

    DataError when there are fewer than `MIN_PER_CLASS` rows of a class to learn from.

    numpy's BLAS runs on one thread meanwhile (the limit is the process's): the L-BFGS
    fits make thousands of dot products of ~17k numbers, which OpenBLAS splits across
    its threads, and the threads spent their time waiting for each other (180 rows: 72 s
    against 5.5 s on a busy 2-core machine, 30 s of CPU against 2.8; the same detector).
    """
    with one_blas_thread():
        return _train_detector(data, encoder, token_bag, seed, neighbours, extra, progress)


def _train_detector(
    data: SafetyData,
    encoder: Encoder,
    token_bag: TokenBag | None,
    seed: int,
    neighbours: bool,
    extra: SafetyData | None,
    progress: Progress | None,
) -> tuple[InjectionDetector, TrainReport]:
    started = time.perf_counter()
    sides = split_sides(data, seed=seed)
    pool = training_pool(data, seed=seed, extra=extra)
    y = pool.is_attack
    _check_counts(y)
    feats = _features(encoder, token_bag, pool.texts, pool.groups, progress)
    folds = _folds(pool.groups, seed)
    labels = np.array(pool.labels)
    row_weights = np.asarray(pool.weights, dtype=np.float64)
    best: tuple[tuple[float, float], dict[str, float], F64] | None = None
    candidates = []
    near_scales = NEIGHBOUR_SCALES if neighbours else (0.0,)
    grid = itertools.product(C_VALUES, EMBEDDING_SCALES, INJECTION_WEIGHTS, near_scales)
    for c, scale, inject, near in grid:
        hyper = {
            "c": c,
            "embedding_scale": scale,
            "injection_weight": inject,
            "neighbour_scale": near,
        }
        weights = np.where(labels == "injection", inject, 1.0) * row_weights
        scores = _out_of_fold(feats, y, weights, folds, hyper, seed)
        key = (_rates(scores, y, threshold_at_fpr(scores, y, TARGET_FPR))["tpr"], _auc(scores, y))
        candidates.append({**hyper, "cv_tpr": key[0], "cv_auc": key[1]})
        if progress is not None:
            progress(f"{hyper}: CV TPR {key[0]:.4f} at FPR <= {TARGET_FPR}, AUC {key[1]:.4f}")
        if best is None or key > best[0]:
            best = (key, hyper, scores)
    assert best is not None
    _, hyper, oof = best
    threshold = threshold_at_fpr(oof, y, TARGET_FPR)
    weights = np.where(labels == "injection", hyper["injection_weight"], 1.0) * row_weights
    model = _fit(feats, np.arange(len(pool), dtype=np.intp), y, weights, hyper, seed)
    references = None
    if model.references is not None and model.neighbour_weights is not None:
        refs = model.references
        references = Neighbours(
            attacks=feats.unit[feats.first[refs[y[refs]]]].astype(np.float16).astype(np.float32),
            benign=feats.unit[feats.first[refs[~y[refs]]]].astype(np.float16).astype(np.float32),
            weights=model.neighbour_weights,
        )
    detector = InjectionDetector(
        encoder.identity,
        threshold,
        model.emb[: encoder.dim],
        model.lex,
        model.bias,
        token_weights=model.emb[encoder.dim :] if token_bag is not None else None,
        token_bag=token_bag,
        neighbours=references,
    )
    others = data.subset(np.flatnonzero(~data.is_detector_row & (sides < 2)))
    report_data = _concat(pool, others)
    report_scores = np.concatenate([oof, score_texts(detector, others.texts, encoder)])
    rules = [detector.match_rules(text) for text in report_data.texts]
    report = TrainReport(
        encoder_identity=encoder.identity,
        hyper=hyper,
        validation=_report(report_data, report_scores, threshold, rules),
        candidates=tuple(candidates),
        rows={
            "train+validation": len(pool),
            "test": int((data.is_detector_row & (sides == 2)).sum()),
        },
        fit_seconds=round(time.perf_counter() - started, 2),
        weights=_label_weights(pool),
    )
    summary: dict[str, Any] = {"hyper": hyper, "rows": report.rows, "seed": seed, "folds": FOLDS}
    if report.weights is not None:  # absent otherwise: an unweighted artifact is as before
        summary["weights"] = report.weights
    summary["cross_validation"] = {
        k: v for k, v in report.validation.to_dict().items() if k in {"n", "tpr", "fpr", "auc"}
    }
    from llmroute.difficulty.calibration import seen_prompts

    trained_on = {"seen_prompts": seen_prompts(pool.texts)}
    return replace(detector, metrics=summary, trained_on=trained_on), report


def _label_weights(pool: SafetyData) -> dict[str, float] | None:
    """Each label's sum of `pool`'s row weights, by label name, or None when every row
    weighs 1: what an artifact records of a weighted training (its ``metrics.weights``),
    since the same rows weighted otherwise make another detector."""
    if all(weight == 1.0 for weight in pool.weights):
        return None
    sums: dict[str, list[float]] = {}
    for label, weight in zip(pool.labels, pool.weights, strict=True):
        sums.setdefault(label, []).append(weight)
    return {label: math.fsum(sums[label]) for label in sorted(sums)}


def _concat(a: SafetyData, b: SafetyData) -> SafetyData:
    return SafetyData(
        a.texts + b.texts,
        a.labels + b.labels,
        a.groups + b.groups,
        a.sources + b.sources,
        a.categories + b.categories,
        a.weights + b.weights,
    )


# ---------------------------------------------------------------- artifacts


def save_detector(detector: InjectionDetector, directory: str | os.PathLike[str]) -> Path:
    """Write ``detector.json`` + ``arrays.npz`` into `directory` (created if needed)."""
    folder = Path(directory)
    meta = {
        "format": FORMAT,
        "kind": "injection-linear",
        "encoder": detector.encoder_identity,
        "threshold": detector.threshold,
        "bias": detector.bias,
        "buckets": detector.buckets,
        "window": list(detector.window),
        "token_bag": detector.token_bag.identity if detector.token_bag is not None else None,
        "neighbours": _neighbour_counts(detector.neighbours),
        "llmroute_version": __version__,
        "metrics": detector.metrics,
        "trained_on": detector.trained_on,
    }
    arrays: dict[str, Any] = {
        "emb_weights": detector.emb_weights.astype(np.float16),
        "lex_weights": detector.lex_weights.astype(np.float16),
    }
    if detector.token_weights is not None:
        arrays["token_weights"] = detector.token_weights.astype(np.float16)
    if detector.neighbours is not None:
        arrays["neighbour_attacks"] = detector.neighbours.attacks.astype(np.float16)
        arrays["neighbour_benign"] = detector.neighbours.benign.astype(np.float16)
        arrays["neighbour_weights"] = detector.neighbours.weights.astype(np.float16)
    return write_artifact(
        folder, ARRAYS_FILE, arrays, META_FILE, meta, what="safety artifact", compressed=True
    )


def _neighbour_counts(neighbours: Neighbours | None) -> dict[str, int] | None:
    if neighbours is None:
        return None
    return {"attacks": len(neighbours.attacks), "benign": len(neighbours.benign)}


def _load_neighbours(stored: Any, meta: dict[str, Any], dim: int) -> Neighbours | None:
    """The stored references, checked against what the meta says and the embedding's
    dim; ValueError (a corrupt artifact) when they do not agree."""
    counts = meta.get("neighbours")
    if not counts:
        return None
    neighbours = Neighbours(
        attacks=np.asarray(stored["neighbour_attacks"], dtype=np.float32),
        benign=np.asarray(stored["neighbour_benign"], dtype=np.float32),
        weights=np.asarray(stored["neighbour_weights"], dtype=np.float32),
    )
    shapes = (neighbours.attacks.shape, neighbours.benign.shape, neighbours.weights.shape)
    if shapes != ((counts["attacks"], dim), (counts["benign"], dim), (2,)):
        raise ValueError(f"neighbour arrays have shapes {shapes}")
    arrays = (neighbours.attacks, neighbours.benign, neighbours.weights)
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("neighbour arrays are not finite")
    return neighbours


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise missing_meta(path, what="safety detector", command="llmroute train safety") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"corrupt safety artifact: {exc}", file=str(path)) from exc
    needed = {"encoder", "threshold", "bias", "buckets", "window"}
    if not isinstance(meta, dict) or not needed <= meta.keys():
        raise ConfigError(
            f"corrupt safety artifact: needs {', '.join(sorted(needed))}", file=str(path)
        )
    if meta.get("kind", "injection-linear") != "injection-linear":
        raise ConfigError(f"not an injection detector (kind {meta['kind']!r})", file=str(path))
    if meta.get("format", FORMAT) != FORMAT:  # another layout, e.g. a newer llmroute's
        raise ConfigError(
            f"safety detector format {meta['format']!r} is not {FORMAT}; retrain it with "
            "`llmroute train safety`",
            file=str(path),
        )
    return meta


def load_detector(
    directory: str | os.PathLike[str], *, encoder_identity: str | None, dim: int | None = None
) -> InjectionDetector:
    """Load a saved detector. With `encoder_identity`, refuse (ConfigError naming both) an
    artifact trained with another encoder, and with `dim` (the encoder's) one whose
    weights are of another width; a missing, corrupt or incomplete artifact is a
    ConfigError naming the path and what is wrong."""
    check_folder(directory, what="safety detector", command="llmroute train safety")
    meta_path = Path(directory) / META_FILE
    meta = _read_meta(meta_path)
    if encoder_identity is not None and weights_identity(str(meta["encoder"])) != (
        weights_identity(encoder_identity)
    ):
        raise ConfigError(
            "safety detector was trained with encoder "
            f"{without_credentials(str(meta['encoder']))!r}, but the encoder "
            f"in use is {encoder_identity!r}; train one with `llmroute train safety` or use "
            "the same encoder",
            file=str(meta_path),
        )
    npz = Path(directory) / ARRAYS_FILE
    try:
        with np.load(npz, allow_pickle=False) as stored:
            emb = np.asarray(stored["emb_weights"], dtype=np.float32)
            lex = np.asarray(stored["lex_weights"], dtype=np.float32)
            tok = (
                np.asarray(stored["token_weights"], dtype=np.float32)
                if meta.get("token_bag")
                else None
            )
            neighbours = _load_neighbours(stored, meta, emb.shape[0])
        size, stride, most = (int(v) for v in meta["window"])
        detector = InjectionDetector(
            encoder_identity=str(meta["encoder"]),
            threshold=float(meta["threshold"]),
            emb_weights=emb,
            lex_weights=lex,
            bias=float(meta["bias"]),
            window=(size, stride, most),
            metrics=dict(meta.get("metrics") or {}),
            trained_on=trained_on if isinstance(trained_on := meta.get("trained_on"), dict) else {},
            token_weights=tok,
            neighbours=neighbours,
        )
        buckets = int(meta["buckets"])
    except FileNotFoundError:
        raise ConfigError("safety detector arrays are missing", file=str(npz)) from None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"corrupt safety artifact: {exc}", file=str(npz)) from exc
    _check_loaded(detector, buckets, npz)
    if dim is not None and detector.emb_weights.shape != (dim,):
        raise ConfigError(
            f"corrupt safety artifact: its embedding weights are {detector.emb_weights.shape[0]}"
            f"-wide, the encoder's vectors {dim}",
            file=str(npz),
        )
    if tok is None:
        return detector
    bag = load_token_bag()
    if tok.shape != (bag.dim,) or not np.isfinite(tok).all():
        raise ConfigError(f"corrupt safety artifact: token weights {tok.shape}", file=str(npz))
    if bag.identity != meta["token_bag"]:
        raise ConfigError(
            f"safety detector was trained with token view {meta['token_bag']!r}, but the "
            f"installed MiniLM weights give {bag.identity!r}; retrain it with "
            "`llmroute train safety`",
            file=str(meta_path),
        )
    return replace(detector, token_bag=bag)


def _check_loaded(detector: InjectionDetector, buckets: int, npz: Path) -> None:
    problem = None
    if detector.emb_weights.ndim != 1 or detector.lex_weights.shape != (buckets,):
        problem = f"weights have shapes {detector.emb_weights.shape}, {detector.lex_weights.shape}"
    elif buckets < 2 or buckets & (buckets - 1):
        problem = f"buckets must be a power of two, got {buckets}"
    elif not (np.isfinite(detector.emb_weights).all() and np.isfinite(detector.lex_weights).all()):
        problem = "weights are not finite"
    elif not math.isfinite(detector.bias):  # every score NaN: nothing would ever be flagged
        problem = f"bias {detector.bias} is not finite"
    elif not 0.0 <= detector.threshold <= 1.0:
        problem = f"threshold {detector.threshold} is not in [0, 1]"
    else:
        try:
            windows("", *detector.window)
        except ValueError as exc:
            problem = f"bad window: {exc}"
    if problem is not None:
        raise ConfigError(f"corrupt safety artifact: {problem}", file=str(npz))


def builtin_detector_dir(encoder_identity: str) -> Path:
    """The shipped detector for a built-in encoder (``builtin:static@…`` or
    ``builtin:minilm-int8@…``); ConfigError for any other encoder."""
    name = encoder_identity.split("@", 1)[0].split(";", 1)[0]
    folder = _BUILTIN_DIRS.get(name)
    if folder is None:
        # `llmroute train safety` takes the built-in encoders only: for an embeddings
        # endpoint there is no detector to train
        train = (
            "train a detector with `llmroute train safety --data FILE -o DIR` and set "
            "safety.injection.artifact to DIR, "
            if name.startswith("builtin:")
            else ""
        )
        raise ConfigError(
            f"safety.injection.artifact 'builtin' ships for builtin:static and "
            f"builtin:minilm-int8 only, and this registry's encoder is {name}: use "
            f"encoder builtin:minilm-int8 (the same model, quantised), {train}or set "
            "safety.injection.enabled to false",
            field="safety.injection.artifact",
        )
    return Path(__file__).resolve().parent / "data" / folder
