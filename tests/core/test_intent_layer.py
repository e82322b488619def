from __future__ import annotations

import numpy as np
import pytest

from llmroute.layers.intent import IntentLayer, confidence_view
from llmroute.scoring.heads import CentroidHead, LinearHead, labels_from
from llmroute.scoring.logreg import SoftmaxModel


def _linear(n_classes: int) -> LinearHead:
    model = SoftmaxModel(np.eye(4, n_classes, dtype=np.float32), np.zeros(n_classes, np.float32))
    return LinearHead(model)


def _layer(has_oos: bool, head: object | None = None) -> IntentLayer:
    head = head if head is not None else _linear(3 if has_oos else 2)
    return IntentLayer(head, ["a", "b"], ["m1", "m2"], [0.6, 0.6], has_out_of_scope=has_oos)  # type: ignore[arg-type]


def test_confidence_against_out_of_scope_class() -> None:
    layer = _layer(True)
    assert layer.pairwise
    # Two close routes, little out-of-scope mass: confidently in scope, but ambiguous.
    result = layer.judge(np.array([0.45, 0.45, 0.10], dtype=np.float32))
    assert result.verdict is not None
    assert result.verdict.confidence == pytest.approx(0.45 / 0.55)
    assert result.verdict.margin == pytest.approx(0.0)
    assert [c.route for c in result.candidates][:2] == ["a", "b"]
    assert result.candidates[0].score == pytest.approx(0.45 / 0.55)


def test_out_of_scope_class_winning_passes() -> None:
    result = _layer(True).judge(np.array([0.2, 0.1, 0.7], dtype=np.float32))
    assert result.verdict is None
    assert result.detail["reason"] == "out of scope (score 0.70)"
    assert result.detail["out_of_scope"] == pytest.approx(0.7)
    # Candidates are routes only, in the units their thresholds use.
    assert [c.route for c in result.candidates] == ["a", "b"]
    assert result.candidates[0].score == pytest.approx(0.2 / 0.9)
    assert result.candidates[0].threshold == pytest.approx(0.6)


def test_without_out_of_scope_class_confidence_is_the_probability() -> None:
    layer = _layer(False)
    assert not layer.pairwise
    result = layer.judge(np.array([0.7, 0.3], dtype=np.float32))
    assert result.verdict is not None
    assert result.verdict.confidence == pytest.approx(0.7)
    assert _layer(False).judge(np.array([0.55, 0.45], dtype=np.float32)).verdict is None


def test_similarity_heads_are_never_pairwise() -> None:
    vectors = np.eye(3, 4, dtype=np.float32)
    head = CentroidHead(vectors, labels_from([0, 1, 2]), 3)
    assert not _layer(True, head).pairwise


def test_confidence_view_keeps_argmax_and_works_on_batches() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=200).astype(np.float32)
    view = confidence_view(probs, 4)
    assert (view.argmax(axis=1) == probs.argmax(axis=1)).all()
    np.testing.assert_allclose(view[:, 4], 0.5)
    row = confidence_view(probs[0], 4)
    np.testing.assert_allclose(row, view[0])
