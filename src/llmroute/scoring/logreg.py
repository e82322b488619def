"""Multinomial logistic regression in numpy, trained with L-BFGS.

Used for the intent layer's linear head: frozen sentence embeddings plus a softmax head
is the strongest simple recipe for intent routing (RESEARCH.md: ~95% on CLINC150). No
scikit-learn or scipy at serve time or install time: the model is a (dim, classes)
matrix and a bias, and training a registry's head takes seconds at most, once (the
result is cached by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SoftmaxModel", "fit_softmax", "softmax_rows"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SoftmaxModel:
    weights: F32  # (dim, classes)
    bias: F32  # (classes,)

    def probabilities(self, x: F32) -> F32:
        """Class probabilities for a (dim,) vector or an (n, dim) matrix."""
        logits: F32 = x @ self.weights + self.bias
        return softmax_rows(logits)


def softmax_rows(logits: F32) -> F32:
    shifted: F32 = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


def fit_softmax(
    x: F32,
    y: npt.NDArray[np.intp],
    n_classes: int,
    *,
    c: float = 10.0,
    max_iter: int = 300,
    tol: float = 1e-6,
    sample_weight: F64 | None = None,
) -> SoftmaxModel:
    """Fit W, b minimising mean cross-entropy + ||W||² / (2·c·n) (scikit-learn's C)."""
    n, dim = x.shape
    xd = np.asarray(x, dtype=np.float64)
    rows = np.arange(n)
    w = np.ones(n) / n if sample_weight is None else sample_weight / sample_weight.sum()
    l2 = 1.0 / (c * n)

    # Each pass costs two (n, dim) x (dim, classes) products and elementwise work on an
    # (n, classes) array; with hundreds of routes and thousands of examples the latter is
    # as slow as the products, so it is done once, in place, and the true class is read
    # by index rather than through a one-hot matrix.
    def loss_grad(theta: F64) -> tuple[float, F64]:
        weights = theta[: dim * n_classes].reshape(dim, n_classes)
        bias = theta[dim * n_classes :]
        logits = xd @ weights
        logits += bias
        logits -= logits.max(axis=1, keepdims=True)
        true_logit = logits[rows, y]
        probs = np.exp(logits, out=logits)
        norm = probs.sum(axis=1)
        loss = -float(w @ (true_logit - np.log(norm))) + 0.5 * l2 * float((weights * weights).sum())
        probs *= (w / norm)[:, None]
        probs[rows, y] -= w  # (p - onehot) * w
        grad_w = xd.T @ probs
        grad_w += l2 * weights
        grad_b = probs.sum(axis=0)
        return loss, np.concatenate([grad_w.ravel(), grad_b])

    theta = _lbfgs(loss_grad, np.zeros(dim * n_classes + n_classes), max_iter, tol)
    weights = theta[: dim * n_classes].reshape(dim, n_classes).astype(np.float32)
    bias = theta[dim * n_classes :].astype(np.float32)
    return SoftmaxModel(np.ascontiguousarray(weights), bias)


def _lbfgs(
    fun: object,
    theta: F64,
    max_iter: int,
    tol: float,
    memory: int = 10,
) -> F64:
    """Limited-memory BFGS with Armijo backtracking; enough for a smooth convex loss."""
    assert callable(fun)
    loss, grad = fun(theta)
    s_hist: list[F64] = []
    y_hist: list[F64] = []
    for _ in range(max_iter):
        direction = -_two_loop(grad, s_hist, y_hist)
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            direction, slope = -grad, -float(grad @ grad)
        step = 1.0
        while True:
            candidate = theta + step * direction
            new_loss, new_grad = fun(candidate)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, yv = candidate - theta, new_grad - grad
        if float(s @ yv) > 1e-12:
            s_hist.append(s)
            y_hist.append(yv)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        converged = abs(loss - new_loss) <= tol * max(1.0, abs(loss))
        theta, loss, grad = candidate, new_loss, new_grad
        if converged or float(np.abs(grad).max()) < tol:
            break
    return theta


def _two_loop(grad: F64, s_hist: list[F64], y_hist: list[F64]) -> F64:
    q = grad.copy()
    alphas: list[float] = []
    rhos = [1.0 / float(yv @ s) for s, yv in zip(s_hist, y_hist, strict=True)]
    for s, yv, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rhos), strict=True):
        alpha = rho * float(s @ q)
        alphas.append(alpha)
        q -= alpha * yv
    if s_hist:
        q *= float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
    for s, yv, rho, alpha in zip(s_hist, y_hist, rhos, reversed(alphas), strict=True):
        beta = rho * float(yv @ q)
        q += (alpha - beta) * s
    return q
