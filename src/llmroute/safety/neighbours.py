"""The nearest known texts: two more inputs of the injection detector.

For each window, the cosine similarity of its embedding to the closest attack and to the
closest benign text of the training data (their first windows). A linear model over the
embedding can only say which *direction* is suspicious; most jailbreaks in the wild are
variants of a few templates and persuasion recipes, so "very close to one known attack"
is a signal it cannot express, and one that a new near-copy of a known attack shares.

While training, a row's neighbours exclude its own group (the same attack or template
family), so the feature a row is fitted on is the one an unseen variant would get; at
serve time every reference counts. At most `MAX_PER_CLASS` references per class are kept
(a seeded sample), which bounds the artifact and the cost of one window: one product with
the reference matrix (≈3,500 × 384 for the shipped data, about 0.1 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_PER_CLASS", "Neighbours", "reference_rows", "similarity_columns", "unit_rows"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

MAX_PER_CLASS = 5000
_CHUNK = 2048  # query rows per similarity block: bounds the memory of training on big data


def unit_rows(x: npt.NDArray[np.floating]) -> F32:
    """Rows scaled to unit length (a zero row stays zero)."""
    rows = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    out: F32 = rows / np.maximum(norms, np.float32(1e-12))
    return out


def reference_rows(rows: IntArray, is_attack: BoolArray, seed: int) -> IntArray:
    """`rows` with each class cut to `MAX_PER_CLASS` by a seeded sample, in order."""
    rng = np.random.default_rng(seed)
    kept = []
    for cls in (True, False):
        members = rows[is_attack[rows] == cls]
        if members.size > MAX_PER_CLASS:
            members = np.sort(rng.choice(members, MAX_PER_CLASS, replace=False))
        kept.append(members)
    return np.sort(np.concatenate(kept))


def similarity_columns(
    queries: F32,
    references: F32,
    ref_is_attack: BoolArray,
    query_groups: IntArray | None = None,
    ref_groups: IntArray | None = None,
) -> F32:
    """(n, 2): each query's best cosine to an attack reference and to a benign one (−1
    when a class has none). With groups, a reference of the query's own group is
    skipped. `queries` and `references` are unit rows."""
    out = np.full((queries.shape[0], 2), -1.0, dtype=np.float32)
    classes = (ref_is_attack, ~ref_is_attack)
    for start in range(0, queries.shape[0], _CHUNK):
        block = queries[start : start + _CHUNK]
        sims = block @ references.T
        if query_groups is not None and ref_groups is not None:
            own = query_groups[start : start + _CHUNK, None] == ref_groups[None, :]
            sims[own] = -1.0
        for column, members in enumerate(classes):
            if members.any():
                out[start : start + block.shape[0], column] = sims[:, members].max(axis=1)
    return out


@dataclass(frozen=True)
class Neighbours:
    """The references of a trained detector and the weights of their two columns."""

    attacks: F32  # (a, dim) unit rows
    benign: F32  # (b, dim) unit rows
    weights: F32  # (2,): attack column, benign column

    @property
    def dim(self) -> int:
        return int(self.attacks.shape[1])

    def logits(self, embeddings: npt.NDArray[np.floating]) -> F64:
        """The two columns' share of each row's logit."""
        unit = unit_rows(embeddings)
        attack = (unit @ self.attacks.T).max(axis=1) if self.attacks.size else -1.0
        benign = (unit @ self.benign.T).max(axis=1) if self.benign.size else -1.0
        out: F64 = (attack * self.weights[0] + benign * self.weights[1]).astype(np.float64)
        return out
