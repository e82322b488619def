from __future__ import annotations

import numpy as np
import pytest

from llmroute.evaluate.calibrate import OOS, choose_threshold, route_predictions, sweep_thresholds


def _scores(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


# Two routes + an out-of-scope class (column 2).
SCORES = _scores(
    [
        [0.90, 0.05, 0.05],  # gold 0, right, confident
        [0.70, 0.20, 0.10],  # gold 0, right
        [0.55, 0.40, 0.05],  # gold 1, wrong
        [0.10, 0.80, 0.10],  # gold 1, right
        [0.60, 0.10, 0.30],  # oos, leaks to route 0 unless threshold > 0.6
        [0.40, 0.20, 0.40],  # oos, leaks unless threshold > 0.4 (tie: first index wins)
        [0.20, 0.10, 0.70],  # oos, the out-of-scope class wins: never routed
    ]
)
GOLD = np.asarray([0, 0, 1, 1, OOS, OOS, OOS], dtype=np.intp)


def test_route_predictions_match_the_layer_rule() -> None:
    assert route_predictions(SCORES, 2, 0.5).tolist() == [0, 0, 0, 1, 0, OOS, OOS]
    assert route_predictions(SCORES, 2, 0.65).tolist() == [0, 0, OOS, 1, OOS, OOS, OOS]


def test_sweep_counts_without_re_scoring() -> None:
    acc, rec = sweep_thresholds(SCORES, GOLD, 2, np.asarray([0.0, 0.5, 0.65, 0.75, 0.95]))
    assert acc.tolist() == pytest.approx([0.75, 0.75, 0.75, 0.5, 0.0])
    assert rec.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])


def test_choose_threshold_with_oos_meets_the_recall_target() -> None:
    choice = choose_threshold(SCORES, GOLD, 2, oos_recall_target=0.9)
    assert 0.6 < choice.threshold < 0.7  # a midpoint, not a validation score
    assert choice.oos_recall == 1.0 and choice.in_scope_accuracy == 0.75
    # The target is the operating point: a looser one keeps the best in-scope accuracy
    # at the lowest threshold that still reaches it, letting more out-of-scope rows in.
    loose = choose_threshold(SCORES, GOLD, 2, oos_recall_target=0.5)
    assert loose.threshold < choice.threshold
    assert loose.in_scope_accuracy == 0.75
    assert loose.oos_recall is not None and 0.5 <= loose.oos_recall < 1.0
    predicted = route_predictions(SCORES, 2, choice.threshold)
    assert (predicted[GOLD == OOS] == OOS).all()


def test_the_recall_target_binds() -> None:
    scores = _scores([[0.55, 0.1, 0.1]] * 4 + [[0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    gold = np.asarray([0, 0, 0, 0, OOS, OOS], dtype=np.intp)
    loose = choose_threshold(scores, gold, 2, oos_recall_target=0.5)
    assert (loose.threshold, loose.in_scope_accuracy, loose.oos_recall) == (0.0, 1.0, 0.5)
    strict = choose_threshold(scores, gold, 2, oos_recall_target=0.9)
    assert (strict.threshold, strict.in_scope_accuracy, strict.oos_recall) == (1.0, 0.0, 1.0)


def test_choose_threshold_without_oos_keeps_the_pass_share() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.2, 1.0, size=(200, 4)).astype(np.float32)
    gold = np.argmax(scores, axis=1).astype(np.intp)
    choice = choose_threshold(scores, gold, 4, in_scope_pass=0.95)
    kept = (scores.max(axis=1) >= choice.threshold).mean()
    assert kept >= 0.95
    assert kept < 0.97
    assert choice.oos_recall is None
    assert choose_threshold(scores, gold, 4, in_scope_pass=1.0).threshold == 0.0


def test_choose_threshold_needs_rows() -> None:
    with pytest.raises(ValueError, match="no validation rows"):
        choose_threshold(np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.intp), 2)
