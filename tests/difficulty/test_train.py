from __future__ import annotations

import numpy as np
import pytest

from llmroute.difficulty.data import LabelledPrompts, split
from llmroute.difficulty.train import DEFAULT_ROUTER, MIN_ROWS, train_router
from llmroute.encoders.fake import FakeEncoder
from llmroute.errors import DataError

HARD = ["integral", "theorem", "proof", "lemma"]
EASY = ["capital", "colour", "animal", "river"]


def _data(n: int, seed: int = 0) -> LabelledPrompts:
    """The weak model fails on prompts about hard topics; the strong one rarely fails."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n) < 0.4
    topics = [HARD[i % 4] if h else EASY[i % 4] for i, h in enumerate(hard)]
    prompts = tuple(f"Question {i} about the {t} here?" for i, t in enumerate(topics))
    weak = ~hard ^ (rng.random(n) < 0.1)
    strong = rng.random(n) < 0.9
    ids = tuple(str(i) for i in range(n))
    return LabelledPrompts(prompts, weak, strong, ids, (None,) * n)


def test_train_router_embeds_selects_and_beats_random() -> None:
    data, encoder = _data(400), FakeEncoder(64)
    train, val, _ = split(data)
    messages: list[str] = []
    _, metrics = train_router(
        DEFAULT_ROUTER, data, encoder, train_idx=train, val_idx=val, progress=messages.append
    )
    assert metrics["apgr"] > 0.6 and metrics["encoder"] == "fake:64"
    # The default recipe cross-validates over train + validation and refits on both.
    assert metrics["folds"] == 10 and metrics["train_rows"] == len(train) + len(val)
    assert metrics["candidates"] and any("embedded" in m for m in messages)
    assert encoder.texts_encoded == len(train) + len(val)


def test_one_fold_fits_on_train_and_chooses_on_validation() -> None:
    data, encoder = _data(400), FakeEncoder(64)
    train, val, _ = split(data)
    _, metrics = train_router("linear", data, encoder, train_idx=train, val_idx=val, folds=1)
    assert "folds" not in metrics and metrics["train_rows"] == len(train)
    assert metrics["val_rows"] == len(val) and metrics["apgr"] > 0.6


def test_too_few_rows_names_the_minimum() -> None:
    data = _data(300)
    with pytest.raises(DataError, match=f"at least {MIN_ROWS['mlp']} training rows, got 100"):
        train_router(
            "mlp", data, FakeEncoder(16), train_idx=range(100), val_idx=range(100, 300), folds=1
        )
    with pytest.raises(DataError, match=f"at least {MIN_ROWS['mlp']} training rows in every fold"):
        train_router("mlp", data, FakeEncoder(16), train_idx=range(100), val_idx=range(100, 200))


def test_unknown_kind_is_refused() -> None:
    data = _data(100)
    with pytest.raises(ValueError, match="unknown router kind"):
        train_router("svm", data, FakeEncoder(16), train_idx=range(60), val_idx=range(60, 100))


@pytest.mark.parametrize("folds", [1, 3])
def test_the_fits_run_with_blas_on_one_thread(folds: int) -> None:
    """Split across OpenBLAS's threads the fits' small products mostly waited for each
    other (600 MMLU rows, linear: 2.4 s against 0.7 s on one thread). The limit is
    lifted afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    data, encoder = _data(400), FakeEncoder(64)
    train, val, _ = split(data)
    seen: list[set[int]] = []

    def progress(message: str) -> None:
        if "embedded" not in message:  # a fit's message, not the embedding's
            seen.append(blas_threads())

    with threadpool_limits(limits=2, user_api="blas"):
        if blas_threads() != {2}:
            pytest.skip("numpy is linked to no BLAS that threadpoolctl can set")
        train_router(
            "linear", data, encoder, train_idx=train, val_idx=val, folds=folds, progress=progress
        )
        assert blas_threads() == {2}
    assert seen and all(threads == {1} for threads in seen), seen
