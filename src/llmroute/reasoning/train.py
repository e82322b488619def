"""Train the reasoning scorer: a class-balanced logistic head over frozen embeddings.

The regularisation `C` is chosen on the validation split by AUC, and the threshold on
the same split: the lowest score whose false-positive rate stays at or under `max_fpr`
(a false positive buys extended thinking nobody needed, so the threshold is set by the
cost side). The test split is never touched here; `evaluate` reports it once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llmroute.encoders.base import Encoder, encode_batches
from llmroute.errors import DataError
from llmroute.reasoning.artifact import ReasoningScorer
from llmroute.reasoning.labelled import ReasoningData, split_reasoning
from llmroute.scoring.logreg import fit_softmax

__all__ = [
    "C_GRID",
    "DEFAULT_MAX_FPR",
    "Fitted",
    "Trained",
    "binary_metrics",
    "embed_texts",
    "fit_on_data",
    "roc_auc",
    "threshold_at_fpr",
    "train_scorer",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
Progress = Callable[[str], None]

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
DEFAULT_MAX_FPR = 0.05
MIN_ROWS_PER_LABEL = 10


embed_texts = encode_batches  # kept under the name the CLI and benchmarks import


def roc_auc(scores: F64, labels: Ints) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(scores: F64, labels: Ints, threshold: float) -> dict[str, float]:
    """AUC, and accuracy / TPR / FPR at `threshold` (score ≥ threshold → reasoning)."""
    predicted = scores >= threshold
    positive = labels == 1
    tpr = float(predicted[positive].mean()) if positive.any() else float("nan")
    fpr = float(predicted[~positive].mean()) if (~positive).any() else float("nan")
    return {
        "auc": round(roc_auc(scores, labels), 4),
        "accuracy": round(float((predicted == positive).mean()), 4),
        "tpr": round(tpr, 4),
        "fpr": round(fpr, 4),
        "rows": len(labels),
        "positives": int(positive.sum()),
    }


def threshold_at_fpr(scores: F64, labels: Ints, max_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on these rows is ≤ `max_fpr`."""
    negatives = np.sort(scores[labels == 0])[::-1]
    allowed = int(np.floor(max_fpr * len(negatives)))
    if allowed >= len(negatives):
        return float(scores.min())
    # strictly above the (allowed+1)-th highest negative score
    return float(np.nextafter(negatives[allowed], np.inf))


@dataclass(frozen=True)
class Trained:
    scorer: ReasoningScorer
    hyper: dict[str, Any]
    validation: dict[str, float]
    sweep: list[dict[str, float]]


def _fit(x: F32, y: Ints, c: float) -> tuple[F32, float]:
    counts = np.bincount(y, minlength=2).astype(np.float64)
    weight = (len(y) / (2.0 * counts))[y]
    model = fit_softmax(x, y, 2, c=c, sample_weight=weight)
    w = (model.weights[:, 1] - model.weights[:, 0]).astype(np.float32)
    b = float(model.bias[1] - model.bias[0])
    return np.ascontiguousarray(w), b


def train_scorer(
    x_train: F32,
    y_train: Ints,
    x_val: F32,
    y_val: Ints,
    *,
    encoder_identity: str,
    max_fpr: float = DEFAULT_MAX_FPR,
    grid: Sequence[float] = C_GRID,
    progress: Progress | None = None,
) -> Trained:
    """Fit one head per `C` on train, keep the best validation AUC, and set the threshold
    on validation at `max_fpr`."""
    for name, y in (("training", y_train), ("validation", y_val)):
        counts = np.bincount(y, minlength=2)
        if counts.min() < MIN_ROWS_PER_LABEL:
            raise DataError(
                f"the {name} split has {counts[1]} 'reasoning' and {counts[0]} 'direct' rows; "
                f"at least {MIN_ROWS_PER_LABEL} of each are needed"
            )
    best: tuple[float, float, F32, float] | None = None
    sweep = []
    for c in grid:
        w, b = _fit(x_train, y_train, c)
        auc = roc_auc(x_val.astype(np.float64) @ w.astype(np.float64) + b, y_val)
        sweep.append({"c": c, "val_auc": round(auc, 4)})
        if progress is not None:
            progress(f"C={c:g}: validation AUC {auc:.4f}")
        if best is None or auc > best[0] + 1e-9:
            best = (auc, c, w, b)
    assert best is not None
    _, c, w, b = best
    probe = ReasoningScorer(w, b, 0.5, encoder_identity)
    val_scores = probe.scores(x_val)
    threshold = threshold_at_fpr(val_scores, y_val, max_fpr)
    scorer = ReasoningScorer(w, b, threshold, encoder_identity)
    return Trained(
        scorer=scorer,
        hyper={"c": c, "max_fpr": max_fpr, "class_weight": "balanced", "grid": list(grid)},
        validation=binary_metrics(val_scores, y_val, threshold),
        sweep=sweep,
    )


@dataclass(frozen=True)
class Fitted:
    """A scorer trained on a labelled file's train split, with the split and embeddings
    (so a caller can report the test split once)."""

    trained: Trained
    embeddings: F32
    train: Ints
    val: Ints
    test: Ints


def fit_on_data(
    data: ReasoningData,
    encoder: Encoder,
    *,
    seed: int = 0,
    max_fpr: float = DEFAULT_MAX_FPR,
    progress: Progress | None = None,
) -> Fitted:
    """Split `data` by group (60/20/20), embed it, and train on the train split with
    `C` and the threshold chosen on validation."""
    train, val, test = split_reasoning(data, seed=seed)
    x = embed_texts(encoder, data.texts, progress=progress)
    trained = train_scorer(
        x[train],
        data.labels[train],
        x[val],
        data.labels[val],
        encoder_identity=encoder.identity,
        max_fpr=max_fpr,
        progress=progress,
    )
    return Fitted(trained, x, train, val, test)
