"""Synthetic difficulty data: the strong model's benefit grows along one embedding direction."""

from __future__ import annotations

import numpy as np

from llmroute.difficulty.train import Rows

DIM = 32


def synthetic_rows(n: int, seed: int) -> Rows:
    """Unit embeddings whose projection `z` on a fixed direction decides who is right:
    the weak model fails where z is high, the strong one mostly succeeds (10% label noise)."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(12345).normal(size=DIM)
    direction /= np.linalg.norm(direction)
    z = rng.normal(size=n)
    x = z[:, None] * direction + 0.6 * rng.normal(size=(n, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    weak = (z < 0.3) ^ (rng.random(n) < 0.1)
    strong = rng.random(n) < 0.9
    texts = tuple(f"question {i} " + "word " * int(rng.integers(1, 30)) for i in range(n))
    return Rows(x.astype(np.float32), texts, weak, strong)
