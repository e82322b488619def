"""Numpy fitting for the difficulty routers: closed-form ridge and small Adam loops.

No torch or scikit-learn: the models are tiny (a vector, a projection, one hidden
layer), and training on ~6k MMLU rows takes seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["Adam", "Fitted", "fit_mf", "fit_mlp", "ridge_path"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Params = dict[str, F64]


class Fitted(NamedTuple):
    """The kept parameters and how many epochs produced them, so that a refit on more
    rows (no validation left to stop on) can run the same number."""

    params: Params
    epochs: int


def ridge_path(x: F32, y: F64, lams: list[float]) -> Iterator[tuple[float, F64, float]]:
    """(λ, weights, bias) minimising ||y − Xw − b||² + λ||w||² for each λ.

    One eigendecomposition of the centred Gram matrix serves the whole grid; the bias is
    not penalised.
    """
    xd = np.asarray(x, dtype=np.float64)
    mean_x, mean_y = xd.mean(axis=0), float(y.mean())
    xc = xd - mean_x
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    proj = evecs.T @ (xc.T @ (y - mean_y))
    for lam in lams:
        w = evecs @ (proj / (evals + lam))
        yield lam, w, mean_y - float(mean_x @ w)


class Adam:
    """Adam with decoupled weight decay (AdamW) on a dict of float64 arrays."""

    def __init__(self, params: Params, lr: float, weight_decay: float = 0.0) -> None:
        self.params, self.lr, self.wd = params, lr, weight_decay
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: Params, decay: tuple[str, ...] = ()) -> None:
        self.t += 1
        c1, c2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        for key, grad in grads.items():
            self.m[key] = 0.9 * self.m[key] + 0.1 * grad
            self.v[key] = 0.999 * self.v[key] + 0.001 * grad * grad
            update = (self.m[key] / c1) / (np.sqrt(self.v[key] / c2) + 1e-8)
            if key in decay:
                update = update + self.wd * self.params[key]
            self.params[key] -= self.lr * update


def _early_stop(
    step: Callable[[], None],
    loss: Callable[[], float] | None,
    params: Params,
    epochs: int,
    patience: int,
) -> Fitted:
    """Run `step` per epoch; keep the parameters with the lowest validation `loss`, or,
    with no `loss`, run exactly `epochs` and keep the last."""
    if loss is None:
        for _ in range(epochs):
            step()
        return Fitted(params, epochs)
    best, best_params, best_epoch, waited = np.inf, {k: v.copy() for k, v in params.items()}, 0, 0
    for epoch in range(1, epochs + 1):
        step()
        current = loss()
        if current < best - 1e-6:
            best, best_params, best_epoch, waited = (
                current,
                {k: v.copy() for k, v in params.items()},
                epoch,
                0,
            )
        else:
            waited += 1
            if waited >= patience:
                break
    return Fitted(best_params, best_epoch)


def _mf_forward(p: Params, x: F64) -> F64:
    return np.asarray((x @ p["proj"]) @ p["models"].T + p["bias"], dtype=np.float64)


def _logloss(logits: F64, labels: F64) -> float:
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def fit_mf(
    x: F32,
    labels: F64,
    val: tuple[F32, F64] | None,
    *,
    dim: int,
    l2: float,
    seed: int = 0,
    epochs: int = 400,
) -> Fitted:
    """Fit logit(model m correct | x) = w_mᵀ(P x) + b_m by full-batch Adam on the logistic
    loss of every (prompt, model) label; early stopping on the validation loss (`val`
    None: exactly `epochs`)."""
    rng = np.random.default_rng(seed)
    xd = np.asarray(x, np.float64)
    xv = None if val is None else np.asarray(val[0], np.float64)
    n, d = xd.shape
    params: Params = {
        "proj": rng.normal(0.0, 1.0 / np.sqrt(d), (d, dim)),
        "models": rng.normal(0.0, 1.0 / np.sqrt(dim), (labels.shape[1], dim)),
        "bias": np.log((labels.mean(axis=0) + 1e-3) / (1 - labels.mean(axis=0) + 1e-3)),
    }
    opt = Adam(params, lr=0.01, weight_decay=l2)

    def step() -> None:
        hidden = xd @ params["proj"]
        err = (1.0 / (1.0 + np.exp(-(hidden @ params["models"].T + params["bias"]))) - labels) / n
        grads = {
            "proj": xd.T @ (err @ params["models"]),
            "models": err.T @ hidden,
            "bias": err.sum(axis=0),
        }
        opt.step(grads, decay=("proj", "models"))

    def val_loss() -> float:
        assert xv is not None and val is not None
        return _logloss(_mf_forward(params, xv), val[1])

    return _early_stop(step, None if val is None else val_loss, params, epochs, patience=20)


def fit_mlp(
    x: F32,
    y: F64,
    val: tuple[F32, F64] | None,
    *,
    hidden: int,
    weight_decay: float,
    seed: int = 0,
    epochs: int = 200,
    batch: int = 128,
) -> Fitted:
    """One ReLU layer regressing `y` (MSE) by minibatch AdamW; early stopping on the
    validation MSE (patience 8 epochs; `val` None: exactly `epochs`)."""
    rng = np.random.default_rng(seed)
    xd = np.asarray(x, np.float64)
    xv = None if val is None else np.asarray(val[0], np.float64)
    n, d = xd.shape
    params: Params = {
        "w1": rng.normal(0.0, np.sqrt(2.0 / d), (d, hidden)),
        "b1": np.zeros(hidden),
        "w2": rng.normal(0.0, np.sqrt(1.0 / hidden), hidden) * 0.1,
        "b2": np.array([float(y.mean())]),
    }
    opt = Adam(params, lr=1e-3, weight_decay=weight_decay)

    def batch_step(rows: npt.NDArray[np.intp]) -> None:
        xb = xd[rows]
        h = np.maximum(xb @ params["w1"] + params["b1"], 0.0)
        err = 2.0 * (h @ params["w2"] + params["b2"] - y[rows]) / rows.size
        dh = np.outer(err, params["w2"]) * (h > 0)
        grads = {
            "w1": xb.T @ dh,
            "b1": dh.sum(axis=0),
            "w2": h.T @ err,
            "b2": err.sum(keepdims=True),
        }
        opt.step(grads, decay=("w1", "w2"))

    def epoch() -> None:
        order = rng.permutation(n)
        for start in range(0, n, batch):
            batch_step(order[start : start + batch])

    def val_loss() -> float:
        assert xv is not None and val is not None
        h = np.maximum(xv @ params["w1"] + params["b1"], 0.0)
        return float(np.mean((h @ params["w2"] + params["b2"] - val[1]) ** 2))

    return _early_stop(epoch, None if val is None else val_loss, params, epochs, patience=8)
