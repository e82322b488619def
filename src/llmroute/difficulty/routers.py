"""Difficulty routers: score = predicted benefit of the strong model (higher → strong).

Every router scores a batch from the request's embedding (shared with the other layers)
and its text, in numpy only, and round-trips through `to_state`/`from_state` as plain
arrays plus JSON metadata (no pickle). Training lives in `fit.py` and `train.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from llmroute.difficulty.features import FEATURE_NAMES, FeatureScaler
from llmroute.errors import ConfigError

__all__ = [
    "ROUTER_KINDS",
    "DifficultyRouter",
    "KnnRouter",
    "LinearRouter",
    "MatrixFactorisationRouter",
    "MlpRouter",
    "RandomRouter",
    "check_input_dim",
    "router_class",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Arrays = dict[str, npt.NDArray[Any]]
State = tuple[Arrays, dict[str, Any]]


@runtime_checkable
class DifficultyRouter(Protocol):
    """Scores prompts; `embeddings` are the encoder's unit rows for `texts`."""

    name: str

    def score(self, embeddings: F32, texts: Sequence[str]) -> F64: ...

    def expects(self) -> tuple[str, int] | None:
        """The array that fixes the embedding width it reads, and that width (None for a
        router that reads no embedding)."""
        ...

    def to_state(self) -> State: ...

    @classmethod
    def from_state(cls, arrays: Arrays, meta: dict[str, Any]) -> DifficultyRouter: ...


class ArrayError(ConfigError):
    """A stored array (``arrays.npz``) is missing or malformed, as opposed to the state
    in ``router.json``: the loader names the file at fault."""


def _stored(
    arrays: Arrays, name: str, shape: tuple[int | None, ...], why: str = ""
) -> npt.NDArray[Any]:
    """The stored array `name`, checked before any score is computed with it: present,
    real numbers, finite, and of `shape` (None: any length of at least 1). A bad one is a
    ConfigError naming the array (the loader adds the artifact's path)."""
    if name not in arrays:
        raise ArrayError("the array is missing", field=name)
    array = np.asarray(arrays[name])
    if array.dtype.kind not in "iuf":
        raise ArrayError(f"holds {array.dtype} values, not numbers", field=name)
    if array.ndim != len(shape) or any(
        (got < 1) if want is None else (got != want)
        for got, want in zip(array.shape, shape, strict=True)
    ):
        raise ArrayError(f"has shape {array.shape}, expected {_shape_text(shape)}{why}", field=name)
    if not np.isfinite(array).all():
        raise ArrayError("holds NaN or infinite values", field=name)
    return array


def _shape_text(shape: tuple[int | None, ...]) -> str:
    """`shape` in words ("a 2-D array of at least one row and 256 columns"): "(n, n)"
    read as a square matrix, where it meant any length of at least 1."""
    nouns = ("value",) if len(shape) == 1 else ("row", "column")
    parts = [
        f"at least one {noun}" if n is None else f"{n} {noun}{'' if n == 1 else 's'}"
        for n, noun in zip(shape, nouns, strict=True)
    ]
    return f"a {len(shape)}-D array of {' and '.join(parts)}"


def _meta_number(meta: dict[str, Any], name: str, *, minimum: float) -> float:
    if name not in meta:  # not "got None": the field was not written, or was deleted
        raise ConfigError("is missing", field=name)
    value = meta[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number, got {value!r}", field=name)
    if not np.isfinite(value) or value < minimum:
        raise ConfigError(f"must be a finite number >= {minimum:g}, got {value!r}", field=name)
    return float(value)


def check_input_dim(router: DifficultyRouter, dim: int, *, file: str | None = None) -> None:
    """Refuse (ConfigError naming `file` and the array) a router whose arrays expect
    embeddings of another width than `dim`, the encoder's: an artifact whose arrays were
    edited or swapped would otherwise fail in a matrix product at its first request."""
    expects = router.expects()
    if expects is not None and expects[1] != dim:
        raise ConfigError(
            f"the router expects {expects[1]}-dimensional embeddings, the encoder gives {dim}",
            file=file,
            field=expects[0],
        )


def _scaler_state(scaler: FeatureScaler | None) -> State:
    if scaler is None:
        return {}, {"features": None}
    arrays: Arrays = {"feature_mean": scaler.mean, "feature_scale": scaler.scale}
    return arrays, {"features": list(FEATURE_NAMES)}


def _scaler_from(arrays: Arrays, meta: dict[str, Any]) -> FeatureScaler | None:
    names = meta.get("features")
    if names is None:
        # with the statistics stored, the weights have their columns too: the artifact,
        # not the encoder, is at fault (the width check would blame the encoder)
        stored = [name for name in ("feature_mean", "feature_scale") if name in arrays]
        if stored:
            raise ConfigError(
                f"is null, yet the text features' statistics ({', '.join(stored)}) are "
                "stored in arrays.npz: the artifact is inconsistent; retrain it",
                field="features",
            )
        return None
    if not isinstance(names, list) or tuple(names) != FEATURE_NAMES:
        raise ValueError(f"artifact features {names} differ from this version's {FEATURE_NAMES}")
    n = len(FEATURE_NAMES)
    scale = _stored(arrays, "feature_scale", (n,))
    if (scale == 0).any():
        raise ArrayError("holds a zero (features are divided by it)", field="feature_scale")
    return FeatureScaler(
        np.asarray(_stored(arrays, "feature_mean", (n,)), np.float64),
        np.asarray(scale, np.float64),
    )


def _width(scaler: FeatureScaler | None) -> int:
    """Input columns past the embedding: the text features, when used."""
    return 0 if scaler is None else len(FEATURE_NAMES)


def _inputs(embeddings: F32, texts: Sequence[str], scaler: FeatureScaler | None) -> F32:
    """The model input: embeddings, with standardised text features appended if used."""
    x = np.asarray(embeddings, dtype=np.float32)
    if scaler is None:
        return x
    return np.hstack([x, scaler.transform(texts).astype(np.float32)])


class RandomRouter:
    """A seeded hash of the text mapped to [0, 1): the baseline, repeatable per text."""

    name: str = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def expects(self) -> tuple[str, int] | None:
        return None

    def score(self, embeddings: F32, texts: Sequence[str]) -> F64:
        out = np.empty(len(texts), dtype=np.float64)
        for i, text in enumerate(texts):
            digest = hashlib.blake2b(f"{self.seed}\0{text}".encode(), digest_size=8).digest()
            out[i] = int.from_bytes(digest, "little") / 2.0**64
        return out

    def to_state(self) -> State:
        return {}, {"seed": self.seed}

    @classmethod
    def from_state(cls, arrays: Arrays, meta: dict[str, Any]) -> RandomRouter:
        return cls(int(meta["seed"]))


class LinearRouter:
    """Ridge regression of the gain (strong − weak correct) on [embedding, features]."""

    name: str = "linear"

    def __init__(self, weights: F32, bias: float, scaler: FeatureScaler | None, lam: float):
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.bias = float(bias)
        self.scaler = scaler
        self.lam = lam

    def expects(self) -> tuple[str, int] | None:
        return "weights", int(self.weights.shape[0]) - _width(self.scaler)

    def score(self, embeddings: F32, texts: Sequence[str]) -> F64:
        x = _inputs(embeddings, texts, self.scaler)
        return (x @ self.weights).astype(np.float64) + self.bias

    def to_state(self) -> State:
        arrays, meta = _scaler_state(self.scaler)
        arrays |= {"weights": self.weights, "bias": np.array([self.bias])}
        return arrays, meta | {"lambda": self.lam}

    @classmethod
    def from_state(cls, arrays: Arrays, meta: dict[str, Any]) -> LinearRouter:
        scaler = _scaler_from(arrays, meta)
        weights = _stored(arrays, "weights", (None,))
        if weights.shape[0] <= _width(scaler):
            raise ArrayError(
                f"has {weights.shape[0]} weights, fewer than the embedding plus "
                f"{_width(scaler)} text features",
                field="weights",
            )
        bias = _stored(arrays, "bias", (1,))
        return cls(weights, float(bias[0]), scaler, float(meta["lambda"]))


def knn_combine(top_sims: F32, top_gains: F32, k: int, temperature: float) -> F64:
    """Softmax(similarity / temperature)-weighted mean gain of the first `k` columns (the
    nearest first when more than `k` are given); temperature 0 means an unweighted mean."""
    sims = top_sims[:, :k].astype(np.float64)
    gains = top_gains[:, :k].astype(np.float64)
    if temperature <= 0:
        return np.asarray(gains.mean(axis=1), dtype=np.float64)
    w = np.exp((sims - sims.max(axis=1, keepdims=True)) / temperature)
    return np.asarray((w * gains).sum(axis=1) / w.sum(axis=1), dtype=np.float64)


def knn_top(queries: F32, keys: F32, gains: F32, k: int, chunk: int = 1024) -> tuple[F32, F32]:
    """The `k` largest cosine similarities of each query row and their gains, sorted."""
    k = min(k, keys.shape[0])
    sims_out = np.empty((queries.shape[0], k), dtype=np.float32)
    gains_out = np.empty_like(sims_out)
    for start in range(0, queries.shape[0], chunk):
        sims = queries[start : start + chunk] @ keys.T
        if k < keys.shape[0]:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(k), sims.shape).copy()
        top = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-top, axis=1)
        idx = np.take_along_axis(part, order, axis=1)
        sims_out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
        gains_out[start : start + chunk] = gains[idx]
    return sims_out, gains_out


def top_k_indices(sims: F32, k: int, block: int = 64) -> npt.NDArray[np.intp]:
    """Indices of the `k` largest entries of one similarity row, in no particular order.

    The maxima of `block`-sized runs bound the answer from below (the k-th largest maximum
    is at most the k-th largest entry), so only entries at or above it go through the
    partition: about half the time of a full `argpartition` over a few thousand keys.
    """
    n = sims.shape[0]
    blocks = n // block
    if blocks > k:
        maxima = sims[: blocks * block].reshape(blocks, block).max(axis=1)
        cut = np.partition(maxima, blocks - k)[blocks - k]
        candidates = np.flatnonzero(sims >= cut)
        m = candidates.shape[0]
        return candidates[np.argpartition(sims[candidates], m - k)[m - k :]]
    if k >= n:
        return np.arange(n)
    return np.argpartition(sims, n - k)[n - k :]


def unit_rows(x: npt.ArrayLike) -> F32:
    """Rows scaled to unit L2 norm (zero rows stay zero), as contiguous float32."""
    arr = np.array(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    np.divide(arr, norms, out=arr, where=norms > 0)
    return np.ascontiguousarray(arr)


class KnnRouter:
    """Similarity-weighted mean gain of the k most similar training prompts."""

    name: str = "knn"

    def __init__(self, keys: F32, gains: F32, k: int, temperature: float) -> None:
        self.keys = unit_rows(keys)
        self.gains = np.asarray(gains, dtype=np.float32)
        self.k = min(k, self.keys.shape[0])
        self.temperature = temperature

    def expects(self) -> tuple[str, int] | None:
        return "keys", int(self.keys.shape[1])

    def score(self, embeddings: F32, texts: Sequence[str]) -> F64:
        queries = unit_rows(embeddings)
        if queries.shape[0] == 1:  # the serving path: one request, no sort needed
            sims = self.keys @ queries[0]
            top = top_k_indices(sims, self.k)
            return knn_combine(sims[None, top], self.gains[None, top], self.k, self.temperature)
        sims, gains = knn_top(queries, self.keys, self.gains, self.k)
        return knn_combine(sims, gains, self.k, self.temperature)

    def to_state(self) -> State:
        arrays: Arrays = {"keys": self.keys, "gains": self.gains}
        return arrays, {"k": self.k, "temperature": self.temperature}

    @classmethod
    def from_state(cls, arrays: Arrays, meta: dict[str, Any]) -> KnnRouter:
        keys = _stored(arrays, "keys", (None, None))
        gains = _stored(arrays, "gains", (keys.shape[0],), " (one gain per row of keys)")
        k = _meta_number(meta, "k", minimum=1)
        if k != int(k):
            raise ConfigError(f"must be a whole number, got {k!r}", field="k")
        temperature = _meta_number(meta, "temperature", minimum=0)
        return cls(keys, gains, int(k), temperature)


class MatrixFactorisationRouter:
    """RouteLLM-style bilinear model: logit(model m correct | p) = w_mᵀ P e_p + b_m.

    One vector per model, so it extends to more than two models; the score is
    P(strong correct) − P(weak correct).
    """

    name: str = "mf"

    def __init__(
        self,
        projection: F32,
        model_vectors: F32,
        model_bias: F32,
        models: Sequence[str],
        *,
        weak: str = "weak",
        strong: str = "strong",
        hyper: dict[str, Any] | None = None,
    ) -> None:
        self.projection = np.ascontiguousarray(projection, dtype=np.float32)  # (d, k)
        self.model_vectors = np.asarray(model_vectors, dtype=np.float32)  # (M, k)
        self.model_bias = np.asarray(model_bias, dtype=np.float32)  # (M,)
        self.models = tuple(models)
        self.weak, self.strong = weak, strong
        self.hyper = dict(hyper or {})
        pair = [self.models.index(weak), self.models.index(strong)]
        # Precompute P·w for the two routed models: one (d, 2) product per request.
        self._head = np.ascontiguousarray(self.projection @ self.model_vectors[pair].T)
        self._bias = self.model_bias[pair].astype(np.float64)

    def expects(self) -> tuple[str, int] | None:
        return "projection", int(self.projection.shape[0])

    def score(self, embeddings: F32, texts: Sequence[str]) -> F64:
        logits = (np.asarray(embeddings, dtype=np.float32) @ self._head) + self._bias
        p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        return np.asarray(p[:, 1] - p[:, 0], dtype=np.float64)

    def to_state(self) -> State:
        arrays: Arrays = {
            "projection": self.projection,
            "model_vectors": self.model_vectors,
            "model_bias": self.model_bias,
        }
        meta = {"models": list(self.models), "weak": self.weak, "strong": self.strong}
        return arrays, meta | {"hyper": self.hyper}

    @classmethod
    def from_state(cls, arrays: Arrays, meta: dict[str, Any]) -> MatrixFactorisationRouter:
        projection = _stored(arrays, "projection", (None, None))
        models = meta["models"]
        if not isinstance(models, list) or not models:
            raise ConfigError(f"must be a list of model names, got {models!r}", field="models")
        per_model = f" (one row per model of {models}, projection's width)"
        vectors = _stored(arrays, "model_vectors", (len(models), projection.shape[1]), per_model)
        bias = _stored(arrays, "model_bias", (len(models),), f" (one per model of {models})")
        for side in ("weak", "strong"):
            if meta[side] not in models:
                raise ConfigError(f"{meta[side]!r} is not one of models {models}", field=side)
        return cls(
            projection,
            vectors,
            bias,
            models,
            weak=meta["weak"],
            strong=meta["strong"],
            hyper=meta.get("hyper"),
        )


class MlpRouter:
    """One ReLU hidden layer regressing the gain; evaluated in numpy."""

    name: str = "mlp"

    def __init__(
        self,
        layers: tuple[F32, F32, F32, F32],
        scaler: FeatureScaler | None,
        hyper: dict[str, Any] | None = None,
    ) -> None:
        w1, b1, w2, b2 = (np.ascontiguousarray(a, dtype=np.float32) for a in layers)
        self.w1, self.b1, self.w2, self.b2 = w1, b1, w2, b2
        self.scaler = scaler
        self.hyper = dict(hyper or {})

    def expects(self) -> tuple[str, int] | None:
        return "w1", int(self.w1.shape[0]) - _width(self.scaler)

    def score(self, embeddings: F32, texts: Sequence[str]) -> F64:
        hidden = _inputs(embeddings, texts, self.scaler) @ self.w1 + self.b1
        np.maximum(hidden, 0.0, out=hidden)
        return (hidden @ self.w2 + self.b2).astype(np.float64)

    @classmethod
    def average(cls, routers: Sequence[MlpRouter], hyper: dict[str, Any]) -> MlpRouter:
        """One network whose score is the mean of `routers`' scores: their hidden layers
        side by side, output weights divided by their number (exact, since the output is
        linear in the hidden units). They must share one feature scaler."""
        if not routers or any(r.scaler is not routers[0].scaler for r in routers):
            raise ValueError("averaged MLP routers must share one feature scaler")
        n = len(routers)
        w1 = np.hstack([r.w1 for r in routers])
        b1 = np.concatenate([r.b1 for r in routers])
        w2 = (np.concatenate([r.w2 for r in routers]) / n).astype(np.float32)
        b2 = np.mean([r.b2 for r in routers], axis=0).astype(np.float32)
        return cls((w1, b1, w2, b2), routers[0].scaler, hyper)

    def to_state(self) -> State:
        arrays, meta = _scaler_state(self.scaler)
        arrays |= {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}
        return arrays, meta | {"hyper": self.hyper}

    @classmethod
    def from_state(cls, arrays: Arrays, meta: dict[str, Any]) -> MlpRouter:
        scaler = _scaler_from(arrays, meta)
        w1 = _stored(arrays, "w1", (None, None))
        if w1.shape[0] <= _width(scaler):
            raise ArrayError(
                f"has {w1.shape[0]} input rows, fewer than the embedding plus "
                f"{_width(scaler)} text features",
                field="w1",
            )
        hidden = w1.shape[1]
        layers = (
            w1,
            _stored(arrays, "b1", (hidden,), " (w1's width)"),
            _stored(arrays, "w2", (hidden,), " (w1's width)"),
            _stored(arrays, "b2", (1,)),
        )
        return cls(layers, scaler, meta.get("hyper"))


ROUTER_KINDS: dict[str, type[DifficultyRouter]] = {
    "random": RandomRouter,
    "linear": LinearRouter,
    "knn": KnnRouter,
    "mf": MatrixFactorisationRouter,
    "mlp": MlpRouter,
}


def router_class(kind: str) -> type[DifficultyRouter]:
    """The router class for `kind`; ValueError lists the known kinds."""
    try:
        return ROUTER_KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown router kind {kind!r}; choose one of {sorted(ROUTER_KINDS)}"
        ) from None
