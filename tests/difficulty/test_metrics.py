from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute.difficulty import (
    Curve,
    apgr,
    cpt,
    knee,
    oracle_curve,
    pgr,
    quality_curve,
    random_curve,
    report,
    threshold_for_share,
)

# Six prompts, shuffled, with two tie groups. Sorted by score descending:
#   score   0.9 0.9 | 0.5 | 0.3 0.3 | 0.1
#   weak     0   1  |  0  |  1   0  |  1      weak_acc   = 3/6
#   strong   1   1  |  1  |  0   0  |  1      strong_acc = 4/6
#   gain    +1   0  | +1  | -1   0  |  0
ORDER = [3, 0, 5, 2, 4, 1]
SCORES = np.array([0.9, 0.9, 0.5, 0.3, 0.3, 0.1])[ORDER]
WEAK = np.array([0, 1, 0, 1, 0, 1], dtype=bool)[ORDER]
STRONG = np.array([1, 1, 1, 0, 0, 1], dtype=bool)[ORDER]


def sent(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Which prompts a threshold sends to strong."""
    return np.asarray(scores) >= threshold


def synthetic(n: int = 2000, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weak = rng.random(n) < 0.5
    strong = weak | (rng.random(n) < 0.8)
    strong[rng.random(n) < 0.05] = False  # a few the weak model gets and the strong misses
    return weak, strong


def test_six_prompts_with_ties_give_one_point_per_tie_group() -> None:
    curve = quality_curve("r", SCORES, WEAK, STRONG)
    np.testing.assert_allclose(curve.shares, [0, 2 / 6, 3 / 6, 5 / 6, 1])
    np.testing.assert_allclose(curve.quality, [3 / 6, 4 / 6, 5 / 6, 4 / 6, 4 / 6])
    np.testing.assert_array_equal(curve.thresholds, [math.inf, 0.9, 0.5, 0.3, 0.1])
    for share, quality, threshold in zip(
        curve.shares, curve.quality, curve.thresholds, strict=True
    ):
        routed = sent(SCORES, threshold)
        assert routed.mean() == pytest.approx(share)
        assert np.where(routed, STRONG, WEAK).mean() == pytest.approx(quality)


def test_six_prompt_pgr_apgr_cpt_and_knee_by_hand() -> None:
    curve = quality_curve("r", SCORES, WEAK, STRONG)
    np.testing.assert_allclose(pgr(curve, 0.5, 4 / 6), [0, 1, 2, 1, 1])
    # trapezoids: 1/3·(0+1)/2 + 1/6·(1+2)/2 + 1/3·(2+1)/2 + 1/6·(1+1)/2
    assert apgr(curve, 0.5, 4 / 6) == pytest.approx(13 / 12)
    assert cpt(curve, 0.5, 4 / 6, 0.5) == pytest.approx(1 / 6)  # halfway from share 0 to 1/3
    assert cpt(curve, 0.5, 4 / 6, 0.8) == pytest.approx(0.8 / 3)
    assert cpt(curve, 0.5, 4 / 6, 1.0) == pytest.approx(1 / 3)
    assert cpt(curve, 0.5, 4 / 6, 0.0) == 0.0
    # lift above the line 0.5 + share/6: 1/9 at 1/3, 1/4 at 1/2, 1/36 at 5/6
    assert knee(curve) == pytest.approx((0.5, 5 / 6))


def test_cpt_is_one_when_the_target_is_never_reached() -> None:
    curve = Curve(
        "flat", np.array([0.0, 0.5, 1.0]), np.array([0.5, 0.55, 0.6]), np.array([math.inf, 1, 0])
    )
    assert cpt(curve, 0.5, 0.7, 0.8) == 1.0
    with pytest.raises(ValueError, match="fraction"):
        cpt(curve, 0.5, 0.7, 50)


def test_random_curve_is_the_straight_line_with_apgr_one_half() -> None:
    weak, strong = synthetic()
    curve = random_curve(weak, strong)
    assert curve.quality[0] == weak.mean() and curve.quality[-1] == strong.mean()
    assert apgr(curve, weak.mean(), strong.mean()) == pytest.approx(0.5)
    assert cpt(curve, weak.mean(), strong.mean(), 0.8) == pytest.approx(0.8)


def test_oracle_apgr_matches_the_analytic_value() -> None:
    # two only-strong-right (+), one both right, one only-weak-right (-): gap = 1/4.
    # PGR rises 0 → 2 over share 0..1/2, stays 2 to 3/4, falls to 1 at share 1:
    # area = 1/2·2/2 + 1/4·2 + 1/4·(2+1)/2 = 11/8
    weak, strong = [0, 0, 1, 1], [1, 1, 1, 0]
    curve = oracle_curve(weak, strong)
    np.testing.assert_allclose(curve.shares, [0, 0.5, 0.75, 1])
    np.testing.assert_allclose(curve.quality, [0.5, 1.0, 1.0, 0.75])
    assert apgr(curve, 0.5, 0.75) == pytest.approx(11 / 8)
    assert knee(curve) == (0.5, 1.0)


def test_perfect_score_is_the_oracle_and_reversed_is_worse_than_random() -> None:
    weak, strong = synthetic()
    acc = (weak.mean(), strong.mean())
    informative = strong.astype(float) - weak  # +1 only strong right, 0 agree, -1 only weak
    perfect = quality_curve("perfect", informative, weak, strong)
    oracle = oracle_curve(weak, strong)
    np.testing.assert_allclose(perfect.shares, oracle.shares)
    np.testing.assert_allclose(perfect.quality, oracle.quality)
    assert apgr(perfect, *acc) == pytest.approx(apgr(oracle, *acc))
    assert apgr(quality_curve("reversed", -informative, weak, strong), *acc) < 0.5


def test_random_permutation_score_has_apgr_near_one_half() -> None:
    weak, strong = synthetic()
    scores = np.random.default_rng(11).permutation(weak.size).astype(float)
    value = apgr(quality_curve("perm", scores, weak, strong), weak.mean(), strong.mean())
    assert abs(value - 0.5) < 0.05


def test_pgr_needs_a_gap() -> None:
    curve = random_curve([0, 1], [1, 0])
    with pytest.raises(ValueError, match="equal"):
        pgr(curve, 0.5, 0.5)


def test_threshold_for_share_reproduces_the_share() -> None:
    weak, _ = synthetic()
    scores = np.random.default_rng(3).random(weak.size)
    for share in (0.1, 0.25, 0.5, 0.8, 0.999):
        assert sent(scores, threshold_for_share(scores, share)).mean() == pytest.approx(share)


def test_threshold_for_share_with_ties_rounds_up_to_the_tie_group() -> None:
    assert threshold_for_share(SCORES, 0.5) == 0.5
    assert sent(SCORES, threshold_for_share(SCORES, 1 / 6)).mean() == pytest.approx(2 / 6)
    assert sent(SCORES, threshold_for_share(SCORES, 0.7)).mean() == pytest.approx(5 / 6)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="share"):
            threshold_for_share(SCORES, bad)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        quality_curve("r", [1, 2], [0, 1], [1])
    with pytest.raises(ValueError, match="finite"):
        quality_curve("r", [1, math.nan], [0, 1], [1, 1])
    with pytest.raises(ValueError, match="booleans"):
        random_curve([0, 2], [1, 1])


def test_report_keys_fractions_and_baselines() -> None:
    curve = quality_curve("r", SCORES, WEAK, STRONG)
    out = report(curve, WEAK, STRONG)
    assert json.loads(json.dumps(out)) == out
    assert out["name"] == "r" and out["n"] == 6
    assert out["weak_accuracy"] == pytest.approx(0.5)
    assert out["strong_accuracy"] == pytest.approx(4 / 6)
    assert out["apgr"] == pytest.approx(13 / 12)
    assert out["cpt50"] == pytest.approx(1 / 6) and out["cpt80"] == pytest.approx(0.8 / 3)
    assert (out["knee_share"], out["knee_quality"]) == pytest.approx((0.5, 5 / 6))
    assert not any(key.startswith("cost") for key in out)
    assert out["random"] == pytest.approx({"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8})
    assert set(out["oracle"]) == {"apgr", "cpt50", "cpt80"}
    assert out["oracle"]["apgr"] > out["apgr"] > out["random"]["apgr"]


def test_report_prices_are_mean_cost_per_request() -> None:
    out = report(quality_curve("r", SCORES, WEAK, STRONG), WEAK, STRONG, prices=(1.0, 10.0))
    assert out["cost_all_strong"] == 10.0 and out["cost_all_weak"] == 1.0
    assert out["cost_cpt50"] == pytest.approx(1 + 9 / 6)
    assert out["cost_cpt80"] == pytest.approx(1 + 9 * 0.8 / 3)
    assert out["cost_knee"] == pytest.approx(5.5)


rows = st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.booleans()), min_size=1, max_size=40)


@settings(max_examples=80, deadline=None)
@given(rows)
def test_curve_ends_are_weak_and_strong_accuracy(data: list[tuple[int, bool, bool]]) -> None:
    scores, weak, strong = (np.array(column) for column in zip(*data, strict=True))
    curve = quality_curve("h", scores, weak, strong)
    assert curve.shares[0] == 0.0 and curve.shares[-1] == 1.0
    assert np.all(np.diff(curve.shares) > 0)
    assert curve.quality[0] == pytest.approx(weak.mean())
    assert curve.quality[-1] == pytest.approx(strong.mean())
