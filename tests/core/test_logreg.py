from __future__ import annotations

import numpy as np

from llmroute.scoring.logreg import fit_softmax, softmax_rows


def test_softmax_rows_sum_to_one() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]], dtype=np.float32)
    probs = softmax_rows(logits.copy())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert probs[1, 0] > 0.999


def test_fit_separates_clusters_and_regularises() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16))
    y = rng.integers(0, 4, 400)
    x = (centers[y] + 0.5 * rng.normal(size=(400, 16))).astype(np.float32)
    model = fit_softmax(x, y, 4)
    assert (model.probabilities(x).argmax(axis=1) == y).mean() > 0.97
    # Stronger regularisation gives smaller weights and softer probabilities.
    soft = fit_softmax(x, y, 4, c=0.01)
    assert np.abs(soft.weights).sum() < np.abs(model.weights).sum()
    assert soft.probabilities(x).max(axis=1).mean() < model.probabilities(x).max(axis=1).mean()


def test_fit_matches_gradient_optimum() -> None:
    """At the optimum the gradient of the regularised loss vanishes."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    c = 1.0
    model = fit_softmax(x, y, 3, c=c, tol=1e-10, max_iter=1000)
    p = model.probabilities(x).astype(np.float64)
    onehot = np.eye(3)[y]
    n = len(y)
    grad_w = x.T.astype(np.float64) @ (p - onehot) / n + model.weights / (c * n)
    assert np.abs(grad_w).max() < 1e-4


def test_weighted_fit_matches_weighted_gradient_optimum() -> None:
    """With sample weights the optimum is that of the weighted mean loss (the class of
    each row is read by index, not through a one-hot matrix)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    y = rng.integers(0, 4, 80)
    weight = rng.uniform(0.2, 3.0, 80)
    c = 1.0
    model = fit_softmax(x, y, 4, c=c, tol=1e-12, max_iter=2000, sample_weight=weight)
    p = model.probabilities(x).astype(np.float64)
    share = (weight / weight.sum())[:, None]
    diff = (p - np.eye(4)[y]) * share
    grad_w = x.T.astype(np.float64) @ diff + model.weights / (c * len(y))
    assert np.abs(grad_w).max() < 1e-4
    assert np.abs(diff.sum(axis=0)).max() < 1e-4
