"""Cross-validated training: folds that keep passages together, the refit on every row,
and the averaged network that the default router ships as."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from difficulty_rows import synthetic_rows

from llmroute.difficulty.artifact import load_router, save_router
from llmroute.difficulty.data import cv_folds
from llmroute.difficulty.features import FeatureScaler
from llmroute.difficulty.fit import fit_mlp
from llmroute.difficulty.routers import KnnRouter, MlpRouter, RandomRouter
from llmroute.difficulty.train import Rows, crossfit_router, val_apgr
from llmroute.errors import DataError

PASSAGE = "Read the following passage about the history of the region. " * 5


def _folds(rows: Rows, n: int = 5, seed: int = 0) -> np.ndarray:
    return cv_folds(rows.texts, rows.weak, rows.strong, n, seed=seed)


def test_folds_keep_a_passage_together_and_are_balanced() -> None:
    prompts = [f"{PASSAGE}\nQuestion {i}?\nA. yes\nB. no\nAnswer:" for i in range(6)]
    prompts += [f"standalone question {i}?" for i in range(194)]
    weak = np.arange(200) % 3 == 0
    strong = np.arange(200) % 5 != 0
    folds = cv_folds(prompts, weak, strong, 5, seed=0)
    assert len(set(folds[:6].tolist())) == 1  # the passage's six questions share a fold
    sizes = np.bincount(folds, minlength=5)
    assert sizes.sum() == 200 and sizes.max() - sizes.min() <= 6
    assert np.array_equal(folds, cv_folds(prompts, weak, strong, 5, seed=0))
    assert not np.array_equal(folds, cv_folds(prompts, weak, strong, 5, seed=1))
    with pytest.raises(ValueError, match="at least 2 folds"):
        cv_folds(prompts, weak, strong, 1)


@pytest.mark.parametrize("kind", ["linear", "knn", "mf", "mlp"])
def test_crossfit_chooses_on_folds_and_refits_on_every_row(kind: str, test_rows: Rows) -> None:
    rows = synthetic_rows(500, seed=4)
    messages: list[str] = []
    router, metrics = crossfit_router(kind, rows, _folds(rows), progress=messages.append)
    assert metrics["folds"] == 5 and metrics["train_rows"] == 500 and metrics["apgr"] > 0.6
    assert len(metrics["candidates"]) >= 2 and metrics["hyper"] in [
        c["hyper"] for c in metrics["candidates"]
    ]
    assert sum("fold" in m for m in messages) == 5
    held_out = val_apgr(router.score(test_rows.embeddings, test_rows.texts), test_rows)
    rand = val_apgr(RandomRouter().score(test_rows.embeddings, test_rows.texts), test_rows)
    assert held_out > rand + 0.1
    if isinstance(router, KnnRouter):
        assert router.keys.shape[0] == 500  # every row is a neighbour, not only a fold's
    if isinstance(router, MlpRouter):
        assert router.hyper["averaged"] == 5
        assert router.w1.shape[1] == 5 * router.hyper["hidden"]


def test_an_averaged_network_scores_the_mean_of_its_members() -> None:
    rows = synthetic_rows(300, seed=5)
    scaler = FeatureScaler.fit(rows.texts)
    x = np.hstack([rows.embeddings, scaler.transform(rows.texts).astype(np.float32)])
    members = []
    for seed in range(3):
        p = fit_mlp(x, rows.gain, None, hidden=8, weight_decay=0.01, seed=seed, epochs=3).params
        layers = tuple(p[k].astype(np.float32) for k in ("w1", "b1", "w2", "b2"))
        members.append(MlpRouter((layers[0], layers[1], layers[2], layers[3]), scaler))
    merged = MlpRouter.average(members, {"hidden": 8})
    expected = np.mean([m.score(rows.embeddings, rows.texts) for m in members], axis=0)
    assert np.allclose(merged.score(rows.embeddings, rows.texts), expected, atol=1e-5)
    alien = MlpRouter((members[0].w1, members[0].b1, members[0].w2, members[0].b2), None)
    with pytest.raises(ValueError, match="share one feature scaler"):
        MlpRouter.average([members[0], alien], {})


def test_an_averaged_network_survives_its_artifact(tmp_path: Path) -> None:
    rows = synthetic_rows(400, seed=7)
    router, metrics = crossfit_router("mlp", rows, _folds(rows, 4))
    save_router(router, tmp_path / "r", encoder_identity="fake:32", trained_on={}, metrics=metrics)
    again = load_router(tmp_path / "r", encoder_identity="fake:32")
    assert isinstance(again, MlpRouter) and again.hyper["averaged"] == 4
    expected = router.score(rows.embeddings, rows.texts)
    assert np.array_equal(again.score(rows.embeddings, rows.texts), expected)


def test_too_few_rows_for_cross_validation_names_the_minimum() -> None:
    rows = synthetic_rows(30, seed=6)
    with pytest.raises(DataError, match="at least 2 folds of 20 rows"):
        crossfit_router("linear", rows, np.zeros(30, dtype=np.intp))
    rows = synthetic_rows(220, seed=6)
    with pytest.raises(DataError, match="'mlp' needs at least 200 training rows in every fold"):
        crossfit_router("mlp", rows, _folds(rows, 5))
