"""Train the learned cascade gate (`learned.py`) on labelled cheap-model answers.

Data: JSON lines with ``prompt``, ``weak_response`` and ``weak_correct`` (a JSON boolean);
``strong_correct`` is optional here (the offline cascade benchmark needs it) and other
fields are ignored. Rows are split with `llmroute.difficulty.split` (seed 0: the same
train/validation/test rows as the difficulty routers when ``strong_correct`` is present;
without it the split is stratified on the weak label only).

Selection: every candidate (which design parts, the embedding weight, the L2 strength) is
fitted on the train rows and ranked by its ROC AUC for ``weak_correct`` on the validation
rows (less noisy on ~135 rows than the cascade APGR, which is reported beside it). The
threshold is chosen on validation too: the lowest escalation rate whose cascade accuracy
reaches 95% of the strong model's (with ``strong_correct``), else 0.5. With `refit` the
chosen settings are refitted on train + validation and the validation threshold is kept;
the test rows are never used.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llmroute.blas import one_blas_thread
from llmroute.difficulty.data import LabelledPrompts, split
from llmroute.encoders.base import Encoder
from llmroute.errors import DataError
from llmroute.gates.learned import LearnedGateModel, checks_matrix, design_matrix
from llmroute.jsonl import read_jsonl
from llmroute.scoring.logreg import fit_softmax

__all__ = [
    "MIN_ROWS",
    "Embedded",
    "GateData",
    "auc",
    "embed_gate_data",
    "fit_gate",
    "gate_split",
    "read_gate_data",
    "train_gate",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
Progress = Callable[[str], None]

MIN_ROWS = 50
"""Fewest rows `train_gate` accepts (60% train, 20% validation); below it the fit is noise."""
QUALITY_TARGET = 0.95
PART_SETS: tuple[tuple[str, ...], ...] = (
    ("checks",),
    ("answer",),
    ("checks", "answer"),
    ("checks", "answer", "prompt"),
    ("checks", "product", "diff"),
    ("checks", "answer", "prompt", "product", "diff"),
)
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
EMB_FACTORS = (0.1, 0.25, 1.0)
"""Embedding parts are multiplied by factor·sqrt(dim) (unit rows → ~unit coordinates)."""


@dataclass(frozen=True)
class GateData:
    """Prompts, the cheap model's answers and labels; arrays aligned with `prompts`."""

    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    weak: BoolArray
    strong: BoolArray | None

    def __len__(self) -> int:
        return len(self.prompts)


def _record(record: dict[str, Any], file: str, number: int) -> dict[str, Any]:
    for field in ("prompt", "weak_response", "weak_correct"):
        if record.get(field) is None:
            raise DataError(f"missing field '{field}'", file=file, line=number)
    for field in ("prompt", "weak_response"):
        if not isinstance(record[field], str):
            raise DataError(f"field '{field}' must be a string", file=file, line=number)
    for field in ("weak_correct", "strong_correct"):
        value = record.get(field)
        if field in record and value is not None and not isinstance(value, bool):
            raise DataError(
                f"field '{field}' must be true or false, got {json.dumps(value)}",
                file=file,
                line=number,
            )
    return record


def read_gate_data(path: str | os.PathLike[str], *, need_strong: bool = False) -> GateData:
    """Read the JSONL; a bad line raises DataError naming the file and line. `strong` is
    kept only when every row has ``strong_correct`` (required with `need_strong`)."""

    def parse(record: dict[str, Any], file: str, number: int) -> dict[str, Any]:
        record = _record(record, file, number)
        if need_strong and record.get("strong_correct") is None:
            raise DataError("missing field 'strong_correct'", file=file, line=number)
        return record

    rows = read_jsonl(
        path,
        parse,
        what="gate data",
        empty="no rows (expected JSON lines with 'prompt', 'weak_response' and 'weak_correct')",
    )
    has_strong = all(r.get("strong_correct") is not None for r in rows)
    return GateData(
        prompts=tuple(r["prompt"] for r in rows),
        answers=tuple(r["weak_response"] for r in rows),
        weak=np.array([r["weak_correct"] for r in rows], dtype=np.bool_),
        strong=np.array([r["strong_correct"] for r in rows], np.bool_) if has_strong else None,
    )


def gate_split(data: GateData, *, seed: int = 0) -> tuple[IntArray, IntArray, IntArray]:
    """The difficulty routers' fixed (train, val, test) split of these prompts."""
    strong = data.strong if data.strong is not None else np.ones(len(data), np.bool_)
    labelled = LabelledPrompts(
        prompts=data.prompts,
        weak=data.weak,
        strong=strong,
        ids=tuple(str(i) for i in range(len(data))),
        domains=(None,) * len(data),
    )
    return split(labelled, seed=seed)


@dataclass(frozen=True)
class Embedded:
    """What fitting needs per row: raw answer checks and both embeddings."""

    checks: F64
    answer_emb: F32
    prompt_emb: F32

    def take(self, idx: IntArray) -> Embedded:
        return Embedded(self.checks[idx], self.answer_emb[idx], self.prompt_emb[idx])


def _embed(encoder: Encoder, texts: Sequence[str], what: str, progress: Progress | None) -> F32:
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for start in range(0, len(texts), 128):
        out[start : start + 128] = encoder.encode(list(texts[start : start + 128]))
        if progress is not None:
            progress(f"embedded {min(start + 128, len(texts))}/{len(texts)} {what}")
    return out


def embed_gate_data(
    encoder: Encoder, data: GateData, *, progress: Progress | None = None
) -> Embedded:
    """Checks and embeddings of every row (a CachedEncoder makes reruns cheap)."""
    return Embedded(
        checks_matrix(data.prompts, data.answers),
        _embed(encoder, data.answers, "answers", progress),
        _embed(encoder, data.prompts, "prompts", progress),
    )


def auc(scores: F64, positive: BoolArray) -> float:
    """ROC AUC of `scores` for `positive` (ties count half); 0.5 if one class is absent."""
    pos, neg = int(positive.sum()), int((~positive).sum())
    if pos == 0 or neg == 0:
        return 0.5
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    ranks[order] = np.arange(1, scores.size + 1, dtype=np.float64)
    for value in np.unique(sorted_scores[np.r_[False, sorted_scores[1:] == sorted_scores[:-1]]]):
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def choose_threshold(accept: F64, weak: BoolArray, strong: BoolArray | None) -> float:
    """The acceptance threshold of the cheapest cascade reaching `QUALITY_TARGET` of the
    strong model's accuracy on these rows (escalate the lowest scores first); 0.5 when
    there are no strong labels."""
    if strong is None:
        return 0.5
    order = np.argsort(accept, kind="stable")
    ranked = accept[order]
    gain = np.concatenate(([0.0], np.cumsum(strong[order].astype(float) - weak[order])))
    quality = (weak.sum() + gain) / weak.size
    k = int(np.flatnonzero(quality >= QUALITY_TARGET * strong.mean() - 1e-12)[0])
    if k == 0:
        return 0.0
    if k == ranked.size:
        return 1.0
    return float((ranked[k - 1] + ranked[k]) / 2.0)


def _standardiser(checks: F64) -> tuple[F64, F64]:
    mean = checks.mean(axis=0)
    scale = checks.std(axis=0)
    return mean, np.where(scale > 1e-9, scale, 1.0)


@dataclass(frozen=True)
class _Fit:
    parts: tuple[str, ...]
    emb_scale: float
    c: float
    weights: F64
    bias: float
    mean: F64
    scale: F64


def _fit(rows: Embedded, weak: BoolArray, parts: tuple[str, ...], emb: float, c: float) -> _Fit:
    mean, scale = _standardiser(rows.checks)
    x = design_matrix(
        parts, rows.checks, rows.answer_emb, rows.prompt_emb, mean=mean, scale=scale, emb_scale=emb
    )
    model = fit_softmax(x.astype(np.float32), weak.astype(np.intp), 2, c=c)
    w = model.weights.astype(np.float64)
    b = model.bias.astype(np.float64)
    return _Fit(parts, emb, c, w[:, 1] - w[:, 0], float(b[1] - b[0]), mean, scale)


def _predict(fit: _Fit, rows: Embedded) -> F64:
    x = design_matrix(
        fit.parts,
        rows.checks,
        rows.answer_emb,
        rows.prompt_emb,
        mean=fit.mean,
        scale=fit.scale,
        emb_scale=fit.emb_scale,
    )
    z = x @ fit.weights + fit.bias
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def _candidates(dim: int) -> list[tuple[tuple[str, ...], float, float]]:
    out = []
    for parts in PART_SETS:
        factors = EMB_FACTORS if "checks" in parts and len(parts) > 1 else (1.0,)
        for factor in factors:
            for c in C_GRID:
                out.append((parts, factor * math.sqrt(dim), c))
    return out


def cascade_apgr(accept: F64, weak: BoolArray, strong: BoolArray) -> float:
    """APGR of the cascade that escalates the lowest acceptance scores first."""
    from llmroute.difficulty.metrics import apgr, quality_curve

    curve = quality_curve("gate", -accept, weak, strong)
    return apgr(curve, float(weak.mean()), float(strong.mean()))


def fit_gate(
    rows: Embedded,
    weak: BoolArray,
    strong: BoolArray | None,
    train_idx: IntArray,
    val_idx: IntArray,
    *,
    progress: Progress | None = None,
) -> tuple[_Fit, dict[str, Any]]:
    """Fit every candidate on train, keep the best validation AUC (ties: the earlier,
    simpler one)."""
    train, val = rows.take(train_idx), rows.take(val_idx)
    val_weak = weak[val_idx]
    val_strong = strong[val_idx] if strong is not None else None
    best: tuple[float, _Fit, F64] | None = None
    tried = []
    for parts, emb, c in _candidates(rows.answer_emb.shape[1]):
        fit = _fit(train, weak[train_idx], parts, emb, c)
        accept = _predict(fit, val)
        score = auc(accept, val_weak)
        entry: dict[str, Any] = {
            "parts": list(parts),
            "emb_scale": round(emb, 4),
            "c": c,
            "val_auc": round(score, 4),
        }
        if val_strong is not None:
            entry["val_apgr"] = round(cascade_apgr(accept, val_weak, val_strong), 4)
        tried.append(entry)
        if progress is not None:
            progress(f"{'+'.join(parts)} c={c}: validation AUC {score:.3f}")
        if best is None or score > best[0] + 1e-9:
            best = (score, fit, accept)
    assert best is not None
    score, fit, accept = best
    metrics: dict[str, Any] = {
        "selected_by": "validation ROC AUC of weak_correct",
        "val_auc": score,
        "parts": list(fit.parts),
        "emb_scale": fit.emb_scale,
        "c": fit.c,
        "threshold": choose_threshold(accept, val_weak, val_strong),
        "candidates": tried,
    }
    if val_strong is not None:
        metrics.update(_val_summary(accept, val_weak, val_strong, metrics["threshold"]))
    return fit, metrics


def _val_summary(
    accept: F64, weak: BoolArray, strong: BoolArray, threshold: float
) -> dict[str, Any]:
    escalate = accept < threshold
    quality = np.where(escalate, strong, weak).mean()
    return {
        "val_apgr": cascade_apgr(accept, weak, strong),
        "val_escalation_at_threshold": float(escalate.mean()),
        "val_accuracy_at_threshold": float(quality),
        "val_weak_accuracy": float(weak.mean()),
        "val_strong_accuracy": float(strong.mean()),
    }


def _check(data: GateData, train_idx: IntArray, val_idx: IntArray) -> None:
    if len(data) < MIN_ROWS:
        raise DataError(f"training a gate needs at least {MIN_ROWS} rows, got {len(data)}")
    for name, idx in (("train", train_idx), ("validation", val_idx)):
        labels = data.weak[idx]
        if labels.all() or not labels.any():
            raise DataError(
                f"the {name} rows need both correct and incorrect weak answers "
                f"({int(labels.sum())} of {labels.size} are correct)"
            )


def train_gate(
    data: GateData,
    encoder: Encoder,
    *,
    seed: int = 0,
    refit: bool = True,
    progress: Progress | None = None,
    embedded: Embedded | None = None,
) -> tuple[LearnedGateModel, dict[str, Any]]:
    """Split, fit and select on validation, then (with `refit`) refit the chosen settings on
    train + validation keeping the validation threshold. Returns the model and a report.

    The fits run with numpy's BLAS on one thread (`one_blas_thread`): 676 GSM8K rows
    took 14-32 s on OpenBLAS's two threads against 8-15 s on one, the same gate."""
    train_idx, val_idx, test_idx = gate_split(data, seed=seed)
    _check(data, train_idx, val_idx)
    started = time.perf_counter()
    rows = embedded if embedded is not None else embed_gate_data(encoder, data, progress=progress)
    with one_blas_thread():  # the fits' small products: see llmroute.blas
        fit, metrics = fit_gate(rows, data.weak, data.strong, train_idx, val_idx, progress=progress)
        fitted_on = "train"
        if refit:
            both = np.concatenate([train_idx, val_idx])
            fit = _fit(rows.take(both), data.weak[both], fit.parts, fit.emb_scale, fit.c)
            fitted_on = "train+val"
    metrics.update(
        {
            "fitted_on": fitted_on,
            "rows": {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)},
            "split": {"seed": seed, "fractions": [0.6, 0.2, 0.2]},
            "fit_seconds": round(time.perf_counter() - started, 3),
        }
    )
    meta = {"hyper": {"c": fit.c, "parts": list(fit.parts)}, "metrics": metrics}
    model = LearnedGateModel(
        encoder=encoder,
        parts=fit.parts,
        weights=fit.weights,
        bias=fit.bias,
        mean=fit.mean,
        scale=fit.scale,
        emb_scale=fit.emb_scale,
        threshold=float(metrics["threshold"]),
        meta=meta,
    )
    return model, metrics
