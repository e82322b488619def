from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmroute.scoring.heads import CentroidHead, KnnHead, LinearHead, labels_from


def _unit(rows: list[list[float]]) -> np.ndarray:
    m = np.asarray(rows, dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


EXAMPLES = _unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 0.9, 0], [0, 0.2, 1]])
LABELS = labels_from([0, 0, 1, 1, 1])


def test_centroid_scores_are_cosines_to_route_means() -> None:
    head = CentroidHead(EXAMPLES, LABELS, 2)
    scores = head.scores(_unit([[1, 0, 0]])[0])
    assert scores.shape == (2,)
    assert scores[0] > 0.99 > scores[1]
    batch = head.scores(_unit([[1, 0, 0], [0, 1, 0]]))
    assert batch.shape == (2, 2)
    assert batch[1].argmax() == 1


def test_knn_mean_of_top_k_with_uneven_routes() -> None:
    head = KnnHead(EXAMPLES, LABELS, 2, k=2)
    q = _unit([[0, 1, 0]])[0]
    scores = head.scores(q)
    sims = EXAMPLES @ q
    np.testing.assert_allclose(scores[1], np.sort(sims[2:])[-2:].mean(), rtol=1e-6)
    np.testing.assert_allclose(scores[0], np.sort(sims[:2])[-2:].mean(), rtol=1e-6)
    # k larger than a route's example count averages over what the route has.
    wide = KnnHead(EXAMPLES, LABELS, 2, k=3)
    np.testing.assert_allclose(wide.scores(q)[0], sims[:2].mean(), rtol=1e-6)
    batch = wide.scores(_unit([[0, 1, 0], [1, 0, 0]]))
    np.testing.assert_allclose(batch[0], wide.scores(q), rtol=1e-6)


def test_linear_head_probabilities() -> None:
    head = LinearHead.train(EXAMPLES, LABELS, 2)
    probs = head.scores(EXAMPLES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == LABELS).all()


def test_the_head_cache_tells_apart_vectors_made_otherwise(tmp_path: Path) -> None:
    """int8 vectors are made one text a call now; a head trained on the batch-made ones
    under the same encoder identity was still loaded from the cache."""
    from llmroute.assemble import build_intent_layer
    from llmroute.encoders.fake import FakeEncoder
    from llmroute.registry import parse_registry

    class Remade(FakeEncoder):
        vectors = ";per_text"

    registry = parse_registry(
        "encoder: builtin:static\n"
        "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {a: {provider: p, model: a}}\n"
        "routes:\n  - {name: r, examples: [hello], target: a}\n"
        "  - {name: s, examples: [bye], target: a}\n"
        "default: {target: a}\n"
    ).registry
    build_intent_layer(registry, FakeEncoder(), cache_dir=tmp_path)
    build_intent_layer(registry, Remade(), cache_dir=tmp_path)
    assert len(list((tmp_path / "heads").glob("linear-*.npz"))) == 2


def test_the_linear_head_fits_with_blas_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenBLAS's threads mostly waited for each other at the fit's products (3,000
    CLINC150 examples, 151 routes: 6 s against 1.2 s on one thread, the same head). The
    limit is lifted afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import llmroute.scoring.heads as heads

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    seen: list[set[int]] = []
    real = heads.fit_softmax

    def fit(*args: Any, **kwargs: Any) -> Any:
        seen.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(heads, "fit_softmax", fit)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    labels = np.arange(40, dtype=np.intp) % 4
    with threadpool_limits(limits=2, user_api="blas"):
        if blas_threads() != {2}:
            pytest.skip("numpy is linked to no BLAS that threadpoolctl can set")
        LinearHead.train(x, labels, 4)
        assert blas_threads() == {2}
    assert seen == [{1}]
