"""Intent scoring heads: from a request embedding to one score per route.

Three heads behind one small interface, chosen by `intent.method` in the registry:

- `centroid`: cosine similarity to each route's mean example. Fast, good on coarse
  intents, weak on fine-grained ones.
- `knn`: mean cosine similarity of the k most similar examples of each route
  (semantic-router style, with top-k rather than max, which RESEARCH.md found better).
- `linear`: a softmax head trained on the examples (the default; scores are
  probabilities).

Out-of-scope examples, when a registry has them, are one more class for every head, so
off-topic traffic has somewhere to go besides "below every threshold".

Every head precomputes its matrices at build time; scoring is one matrix-vector
product plus a little numpy, and works on a batch as well as on one vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from llmroute.blas import one_blas_thread
from llmroute.encoders.base import Embeddings
from llmroute.scoring.logreg import SoftmaxModel, fit_softmax

__all__ = ["CentroidHead", "IntentHead", "KnnHead", "LinearHead"]

F32 = npt.NDArray[np.float32]
Labels = npt.NDArray[np.intp]


class IntentHead(Protocol):
    """Scores a (dim,) or (n, dim) embedding against every class: (classes,) or (n, classes)."""

    @property
    def method(self) -> str: ...

    @property
    def probabilistic(self) -> bool: ...

    def scores(self, query: F32) -> F32: ...


def _normalise(matrix: F32) -> F32:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    out: F32 = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return out


class CentroidHead:
    method = "centroid"
    probabilistic = False

    def __init__(self, examples: Embeddings, labels: Labels, n_classes: int) -> None:
        sums = np.zeros((n_classes, examples.shape[1]), dtype=np.float32)
        np.add.at(sums, labels, examples)
        # (dim, routes), so a query row multiplies on the left without a transpose copy.
        self._matrix = np.ascontiguousarray(_normalise(sums).T)

    def scores(self, query: F32) -> F32:
        out: F32 = query @ self._matrix
        return out


class KnnHead:
    method = "knn"
    probabilistic = False

    def __init__(self, examples: Embeddings, labels: Labels, n_classes: int, k: int = 5) -> None:
        order = np.argsort(labels, kind="stable")
        self._examples = np.ascontiguousarray(examples[order].T)  # (dim, n_examples)
        counts = np.bincount(labels, minlength=n_classes)
        width = int(counts.max())
        pad_index = len(labels)  # points at a -inf slot appended to the similarities
        index = np.full((n_classes, width), pad_index, dtype=np.intp)
        start = 0
        for route, count in enumerate(counts.tolist()):  # ints: numpy 2.5 types np.intp apart
            index[route, :count] = np.arange(start, start + count)
            start += count
        self._index = index
        self._k = min(k, width)
        self._divisor = np.minimum(counts, k).astype(np.float32)

    def scores(self, query: F32) -> F32:
        sims = query @ self._examples
        pad = np.full((*sims.shape[:-1], 1), -np.inf, dtype=np.float32)
        grouped = np.concatenate([sims, pad], axis=-1)[..., self._index]
        top = -np.partition(-grouped, self._k - 1, axis=-1)[..., : self._k]
        top[np.isinf(top)] = 0.0
        # float32 already; numpy 2.5's stubs (Python 3.12+) type the division as float64
        out: F32 = (top.sum(axis=-1) / self._divisor).astype(np.float32, copy=False)
        return out


class LinearHead:
    method = "linear"
    probabilistic = True  # scores are class probabilities (see IntentLayer.confidences)

    def __init__(self, model: SoftmaxModel) -> None:
        self.model = model

    @classmethod
    def train(
        cls, examples: Embeddings, labels: Labels, n_classes: int, *, c: float = 10.0
    ) -> LinearHead:
        counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
        # Balance classes so a route with many examples does not dominate the prior.
        weights = (1.0 / np.maximum(counts, 1.0))[labels]
        # OpenBLAS's threads mostly waited for each other at the fit's products (3,000
        # CLINC150 examples, 151 routes: 6 s against 1.2 s on one thread; the same head).
        with one_blas_thread():
            return cls(fit_softmax(examples, labels, n_classes, c=c, sample_weight=weights))

    def scores(self, query: F32) -> F32:
        return self.model.probabilities(query)


def labels_from(route_of_example: Sequence[int]) -> Labels:
    return np.asarray(route_of_example, dtype=np.intp)
