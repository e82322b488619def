from __future__ import annotations

import numpy as np
import pytest

from llmroute.difficulty.features import FEATURE_NAMES, FeatureScaler, text_features
from llmroute.difficulty.routers import (
    ROUTER_KINDS,
    DifficultyRouter,
    KnnRouter,
    RandomRouter,
    top_k_indices,
)
from llmroute.difficulty.train import Rows, fit_router, val_apgr


def test_features_have_fixed_names_and_standardise() -> None:
    texts = ["What is 2+2?\nA. 4\nB. 5\nAnswer:", "Explain THE theory at length " * 20, "x"]
    raw = text_features(texts)
    assert raw.shape == (3, len(FEATURE_NAMES))
    assert raw[0, FEATURE_NAMES.index("has_choices")] == 1.0
    assert raw[1, FEATURE_NAMES.index("has_choices")] == 0.0
    scaled = FeatureScaler.fit(texts).transform(texts)
    assert np.allclose(scaled.mean(axis=0), 0.0)


def test_random_router_is_repeatable_and_uniform() -> None:
    texts = [f"prompt {i}" for i in range(2000)]
    scores = RandomRouter(seed=3).score(np.zeros((2000, 4), np.float32), texts)
    assert (scores == RandomRouter(seed=3).score(np.zeros((2000, 4), np.float32), texts)).all()
    assert 0.45 < scores.mean() < 0.55 and scores.min() >= 0.0 and scores.max() < 1.0


@pytest.mark.parametrize("kind", ["linear", "knn", "mf", "mlp"])
def test_each_router_beats_random_on_a_learnable_task(
    kind: str, train_rows: Rows, val_rows: Rows, test_rows: Rows
) -> None:
    router, metrics = fit_router(kind, train_rows, val_rows, seed=0)
    assert isinstance(router, DifficultyRouter) and router.name == kind
    assert metrics["apgr"] > 0.6
    held_out = val_apgr(router.score(test_rows.embeddings, test_rows.texts), test_rows)
    rand = val_apgr(RandomRouter().score(test_rows.embeddings, test_rows.texts), test_rows)
    assert held_out > rand + 0.1


@pytest.mark.parametrize("kind", sorted(ROUTER_KINDS))
def test_state_round_trip_and_single_row_scores(
    kind: str, train_rows: Rows, val_rows: Rows
) -> None:
    router, _ = fit_router(kind, train_rows, val_rows, seed=0)
    arrays, meta = router.to_state()
    again = ROUTER_KINDS[kind].from_state(arrays, meta)
    batch = again.score(val_rows.embeddings, val_rows.texts)
    assert batch.dtype == np.float64 and batch.shape == (len(val_rows.texts),)
    assert np.array_equal(batch, router.score(val_rows.embeddings, val_rows.texts))
    one = router.score(val_rows.embeddings[:1], val_rows.texts[:1])
    assert one.shape == (1,) and np.isclose(one[0], batch[0], atol=1e-5)


def test_mf_router_keeps_model_names(train_rows: Rows, val_rows: Rows) -> None:
    router, _ = fit_router("mf", train_rows, val_rows, seed=0)
    _, meta = router.to_state()
    assert meta["models"] == ["weak", "strong"] and meta["strong"] == "strong"


@pytest.mark.parametrize("k", [1, 7, 45, 46, 200, 2999, 3000, 5000])
def test_top_k_indices_finds_the_k_largest(k: int) -> None:
    rng = np.random.default_rng(k)
    # Clustered rows with exact duplicates, as in real prompt sets, so ties occur.
    sims = np.round(rng.standard_normal(3000), 2).astype(np.float32)
    got = top_k_indices(sims, k)
    want = min(k, sims.shape[0])
    assert got.shape == (want,) and len(set(got.tolist())) == want
    assert np.array_equal(np.sort(sims[got]), np.sort(sims)[sims.shape[0] - want :])


def test_knn_single_request_path_matches_the_batch_path() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 32))
    keys = (centres[rng.integers(0, 20, 4000)] + 0.5 * rng.standard_normal((4000, 32))).astype(
        np.float32
    )
    queries = (centres[rng.integers(0, 20, 50)] + 0.5 * rng.standard_normal((50, 32))).astype(
        np.float32
    )
    for k, temperature in ((16, 0.05), (40, 0.0)):
        router = KnnRouter(keys, rng.random(4000).astype(np.float32), k, temperature)
        batch = router.score(queries, [""] * 50)
        one_by_one = [router.score(queries[i : i + 1], [""])[0] for i in range(50)]
        assert np.allclose(one_by_one, batch, atol=1e-6)
