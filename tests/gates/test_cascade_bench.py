"""Cascade evaluation math on hand-made rows whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from llmroute.gates.cascade_bench import (
    cascade_cost,
    cascade_curve,
    escalation_at_quality,
    evaluate_cascade,
    heuristic_accept,
    oracle_accept,
    quality_at,
    random_accept,
    router_cost,
    threshold_rows,
)

# 10 rows: weak right on 6 (rows 0-5), strong right on 8 (all but rows 5 and 9).
WEAK = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
STRONG = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 0], dtype=bool)
# A gate that ranks rows 6, 7 (weak wrong) lowest, then row 0 (weak right), then 8, 9.
ACCEPT = np.array([0.35, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.2, 0.4, 0.45])


def test_threshold_rows_count_escalations_accuracy_and_cost() -> None:
    rows = threshold_rows(ACCEPT, WEAK, STRONG, (1.0, 10.0), thresholds=(0.3, 0.5, 0.95))
    first, second, third = rows
    # 0.3: rows 6, 7 escalate; both strong-right → 6 + 2 = 8 correct.
    assert first["escalation"] == pytest.approx(0.2)
    assert first["accuracy"] == pytest.approx(0.8)
    assert first["cost"] == pytest.approx(1.0 + 0.2 * 10.0)
    assert first["random_accuracy"] == pytest.approx(0.8 * 0.6 + 0.2 * 0.8)
    # 0.5: rows 0, 6, 7, 8, 9 escalate → 5 kept weak right + row0 strong right + 6, 7, 8.
    assert second["escalation"] == pytest.approx(0.5)
    assert second["accuracy"] == pytest.approx(0.9)
    # 0.95: everything escalates → strong accuracy; costs weak + strong.
    assert third["escalation"] == 1.0 and third["accuracy"] == pytest.approx(0.8)
    assert third["cost"] == pytest.approx(11.0)


def test_costs_of_a_cascade_and_of_a_router() -> None:
    assert cascade_cost(0.0, (1.0, 10.0)) == 1.0
    assert cascade_cost(0.9, (1.0, 10.0)) == pytest.approx(10.0)  # break-even
    assert router_cost(0.5, (1.0, 10.0)) == pytest.approx(5.5)
    result = evaluate_cascade("g", ACCEPT, WEAK, STRONG, bootstrap=0)
    assert result["break_even_escalation"] == pytest.approx(0.9)
    assert result["prices"] == {"weak": 1.0, "strong": 10.0, "default": True}
    assert result["cost_all_strong"] == 10.0 and result["n"] == 10


def test_the_oracle_reaches_strong_accuracy_at_the_minimum_escalation() -> None:
    curve = cascade_curve("oracle", oracle_accept(WEAK), WEAK, STRONG)
    # Escalating the 4 wrong weak answers (rate 0.4) gives 6 + 3 = 9 right: above strong.
    assert quality_at(curve, 0.4) == pytest.approx(0.9)
    # 95% of strong = 0.76 needs +0.16 over 0.6; the oracle gains 3 in 4 rows (0.075 per
    # 0.1 of escalation, in expectation within the tie group): 0.16 / 0.75 = 0.2133.
    assert escalation_at_quality(curve, 0.6, 0.8) == pytest.approx(0.16 / 0.75)
    result = evaluate_cascade("oracle", oracle_accept(WEAK), WEAK, STRONG, bootstrap=0)
    assert result["apgr"] > 1.0 and result["beats_random_at_every_rate"]


def test_random_escalation_is_the_straight_line() -> None:
    result = evaluate_cascade("g", ACCEPT, WEAK, STRONG, bootstrap=0)
    assert result["random"]["apgr"] == pytest.approx(0.5)
    # The line reaches 0.76 = 0.6 + 0.2 * rate at rate 0.8.
    assert result["random"]["escalation_at_95pct_quality"] == pytest.approx(0.8)
    hashed = random_accept([f"p{i}" for i in range(2000)])
    assert 0.45 < hashed.mean() < 0.55 and hashed.min() >= 0.0 and hashed.max() < 1.0


def test_summary_of_the_hand_made_gate() -> None:
    result = evaluate_cascade(
        "g", ACCEPT, WEAK, STRONG, router_scores=-ACCEPT, router_name="r", bootstrap=50
    )
    # Gate order: 6, 7 (+1 each), 0 (-0... weak right, strong right: 0), 8 (+1), 9 (0).
    curve = result["curves"][0]
    np.testing.assert_allclose(curve.shares, np.linspace(0, 1, 11)[[0, 1, 2, 3, 4, 5, 10]])
    np.testing.assert_allclose(curve.quality, [0.6, 0.7, 0.8, 0.8, 0.9, 0.9, 0.8])
    assert result["escalation_at_95pct_quality"] == pytest.approx(0.16)
    assert result["cost_at_95pct_quality"] == pytest.approx(1.0 + 0.16 * 10.0)
    # The same ranking as a router: same share, but no weak call to pay for.
    assert result["router"]["strong_share_at_95pct_quality"] == pytest.approx(0.16)
    assert result["router"]["cost_at_95pct_quality"] == pytest.approx(0.84 + 1.6)
    assert not result["fewer_strong_calls_than_router"]
    assert not result["cheaper_than_router_at_95pct_quality"]
    low, high = result["apgr_ci95"]
    assert low <= high


def test_the_offline_heuristic_gate() -> None:
    answers = ["", "It is 4", "<<2*2=5>>5\n#### 5", "<<2*2=4>>4\n#### 4"]
    np.testing.assert_array_equal(heuristic_accept(["q"] * 4, answers), [0, 0.25, 0.5, 1.0])
