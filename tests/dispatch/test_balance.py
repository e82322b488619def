"""`Balancer`: weighted permutations, least-in-flight and latency ordering (seeded)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmroute.dispatch.balance import MAX_PENALTY_S, Balancer
from llmroute.registry.schema import BALANCE_STRATEGIES, Balance


def _balancer(weights: list[float], strategy: Balance, seed: int = 0) -> Balancer:
    return Balancer(weights, strategy, rng=random.Random(seed))


def _firsts(balancer: Balancer, candidates: list[int], n: int) -> Counter[int]:
    return Counter(balancer.order(candidates)[0] for _ in range(n))


# -- every strategy ------------------------------------------------------------------------


@given(
    strategy=st.sampled_from(BALANCE_STRATEGIES),
    weights=st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=1, max_size=8),
    seed=st.integers(min_value=0, max_value=2**32),
    data=st.data(),
)
def test_order_is_a_permutation_of_the_candidates(
    strategy: Balance, weights: list[float], seed: int, data: st.DataObject
) -> None:
    balancer = _balancer(weights, strategy, seed)
    indices = list(range(len(weights)))
    candidates = data.draw(st.lists(st.sampled_from(indices), min_size=1, unique=True))
    for index in data.draw(st.lists(st.sampled_from(indices), max_size=5)):
        balancer.start(index)
        balancer.finish(index, latency_s=data.draw(st.none() | st.floats(0, 10)))
    order = balancer.order(candidates)
    assert sorted(order) == sorted(candidates)


@pytest.mark.parametrize("strategy", BALANCE_STRATEGIES)
def test_same_seed_same_orders(strategy: Balance) -> None:
    a, b = _balancer([1, 2, 3], strategy, seed=5), _balancer([1, 2, 3], strategy, seed=5)
    assert [a.order([0, 1, 2]) for _ in range(20)] == [b.order([0, 1, 2]) for _ in range(20)]


def test_in_flight_counts_starts_and_finishes() -> None:
    balancer = _balancer([1, 1], "weighted")
    balancer.start(1)
    balancer.start(1)
    assert (balancer.in_flight(0), balancer.in_flight(1)) == (0, 2)
    balancer.finish(1, latency_s=0.2)
    balancer.finish(1, latency_s=None)
    balancer.finish(1, latency_s=None)  # one too many: clamped, not negative
    assert balancer.in_flight(1) == 0


def test_release_ends_a_request_without_a_latency_sample() -> None:
    balancer = _balancer([1], "latency")
    balancer.start(0)
    balancer.release(0)
    balancer.release(0)
    assert balancer.in_flight(0) == 0
    assert balancer.latency(0) is None


@pytest.mark.parametrize("weights", [[], [1.0, 0.0], [1.0, -2.0], [float("inf")]])
def test_rejects_bad_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        _balancer(weights, "weighted")


def test_rejects_bad_alpha_and_strategy() -> None:
    with pytest.raises(ValueError, match="ewma_alpha"):
        Balancer([1.0], "latency", rng=random.Random(0), ewma_alpha=0.0)
    with pytest.raises(ValueError, match="strategy"):
        Balancer([1.0], "fastest", rng=random.Random(0))  # type: ignore[arg-type]


# -- weighted ------------------------------------------------------------------------------


def test_weighted_first_choice_follows_the_weights() -> None:
    weights = [1.0, 2.0, 5.0, 2.0]
    firsts = _firsts(_balancer(weights, "weighted", seed=11), [0, 1, 2, 3], 20_000)
    for index, weight in enumerate(weights):
        assert firsts[index] / 20_000 == pytest.approx(weight / sum(weights), abs=0.02)


def test_weighted_respects_the_candidate_subset() -> None:
    weights = [1.0, 3.0, 100.0]
    firsts = _firsts(_balancer(weights, "weighted", seed=2), [0, 1], 10_000)
    assert set(firsts) == {0, 1}
    assert firsts[1] / 10_000 == pytest.approx(0.75, abs=0.02)


def test_weighted_second_choice_follows_the_remaining_weights() -> None:
    # 2 almost always comes first; 0 and 1 follow in proportion to their weights (1 : 3).
    balancer = _balancer([1.0, 3.0, 10_000.0], "weighted", seed=4)
    seconds = Counter(balancer.order([2, 0, 1])[1] for _ in range(10_000))
    assert seconds[1] / 10_000 == pytest.approx(0.75, abs=0.02)


def test_weighted_tiny_weights_still_order() -> None:
    balancer = _balancer([1e-300, 1e-300], "weighted", seed=0)
    firsts = _firsts(balancer, [0, 1], 2000)
    assert firsts[0] / 2000 == pytest.approx(0.5, abs=0.05)


# -- least in flight -----------------------------------------------------------------------


def test_least_in_flight_prefers_the_idle_deployment() -> None:
    balancer = _balancer([1, 1, 1], "least_in_flight")
    balancer.start(0)
    balancer.start(0)
    balancer.start(2)
    assert all(balancer.order([0, 1, 2]) == [1, 2, 0] for _ in range(50))


def test_least_in_flight_divides_by_weight() -> None:
    balancer = _balancer([1, 4], "least_in_flight")
    for _ in range(3):
        balancer.start(1)  # 3 / 4 in flight per weight beats 1 / 1
    balancer.start(0)
    assert balancer.order([0, 1]) == [1, 0]
    balancer.start(1)
    balancer.start(1)  # 5 / 4 > 1 / 1
    assert balancer.order([0, 1]) == [0, 1]


def test_least_in_flight_breaks_ties_at_random() -> None:
    firsts = _firsts(_balancer([2, 2, 2], "least_in_flight", seed=9), [0, 1, 2], 3000)
    assert all(count / 3000 == pytest.approx(1 / 3, abs=0.05) for count in firsts.values())
    assert len(firsts) == 3


def test_least_in_flight_spreads_concurrent_requests_by_weight() -> None:
    balancer = _balancer([1, 3], "least_in_flight", seed=1)
    for _ in range(40):
        balancer.start(balancer.order([0, 1])[0])
    assert (balancer.in_flight(0), balancer.in_flight(1)) == (10, 30)


# -- latency -------------------------------------------------------------------------------


def test_latency_prefers_the_faster_deployment() -> None:
    balancer = _balancer([1, 1, 1], "latency")
    for index, latency in [(0, 0.9), (1, 0.2), (2, 0.5)]:
        balancer.start(index)
        balancer.finish(index, latency_s=latency)
    assert all(balancer.order([0, 1, 2]) == [1, 2, 0] for _ in range(20))


def test_latency_tries_unmeasured_deployments_first() -> None:
    balancer = _balancer([1, 1, 1], "latency")
    balancer.start(0)
    balancer.finish(0, latency_s=0.01)
    order = balancer.order([0, 1, 2])
    assert order[-1] == 0 and set(order[:2]) == {1, 2}


def test_latency_sends_one_measuring_request_at_a_time() -> None:
    # An unmeasured deployment already being measured does not take all the traffic.
    balancer = _balancer([1, 1], "latency")
    balancer.start(0)
    balancer.finish(0, latency_s=0.3)
    balancer.start(1)
    assert balancer.order([0, 1]) == [0, 1]


def test_latency_is_a_moving_average() -> None:
    balancer = Balancer([1], "latency", rng=random.Random(0), ewma_alpha=0.5)
    assert balancer.latency(0) is None
    for latency in (1.0, 3.0):
        balancer.start(0)
        balancer.finish(0, latency_s=latency)
    assert balancer.latency(0) == pytest.approx(2.0)


def test_latency_penalises_failures() -> None:
    balancer = _balancer([1, 1], "latency")
    for index in (0, 1):
        balancer.start(index)
        balancer.finish(index, latency_s=0.1 if index == 0 else 0.2)
    assert balancer.order([0, 1]) == [0, 1]
    balancer.start(0)
    balancer.finish(0, latency_s=None)  # sample max(2 × 0.1, 1 s) = 1 s
    assert balancer.latency(0) == pytest.approx(0.3 * 1.0 + 0.7 * 0.1)
    assert balancer.order([0, 1]) == [1, 0]


def test_latency_failure_before_any_sample_counts_one_second() -> None:
    balancer = _balancer([1, 1], "latency")
    balancer.start(0)
    balancer.finish(0, latency_s=None)
    assert balancer.latency(0) == pytest.approx(1.0)


def test_repeated_failures_are_capped_and_recoverable() -> None:
    balancer = _balancer([1], "latency")
    for _ in range(10_000):
        balancer.finish(0, latency_s=None)
    slow = balancer.latency(0)
    assert slow is not None and slow <= MAX_PENALTY_S
    for _ in range(50):
        balancer.finish(0, latency_s=0.1)
    fast = balancer.latency(0)
    assert fast is not None and fast < 0.2


def test_latency_ignores_non_finite_samples_and_clamps_negative_ones() -> None:
    balancer = _balancer([1], "latency")
    balancer.finish(0, latency_s=float("nan"))
    assert balancer.latency(0) is None
    balancer.finish(0, latency_s=-1.0)
    assert balancer.latency(0) == 0.0


# -- sticky --------------------------------------------------------------------------------


def test_sticky_sends_a_conversation_to_one_deployment() -> None:
    one, other = _balancer([1, 1, 1], "sticky", 1), _balancer([1, 1, 1], "sticky", 2)
    orders = {tuple(one.order([0, 1, 2], "conv-7")) for _ in range(20)}
    assert len(orders) == 1  # the same order every time ...
    assert tuple(other.order([0, 1, 2], "conv-7")) in orders  # ... in every process


def test_sticky_spreads_conversations_by_weight() -> None:
    balancer = _balancer([3, 1], "sticky")
    firsts = Counter(balancer.order([0, 1], f"conv-{i}")[0] for i in range(4000))
    assert 0.72 < firsts[0] / 4000 < 0.78


def test_sticky_moves_only_the_conversations_of_a_deployment_that_leaves() -> None:
    balancer = _balancer([1, 1, 1], "sticky")
    keys = [f"conv-{i}" for i in range(600)]
    before = {k: balancer.order([0, 1, 2], k)[0] for k in keys}
    after = {k: balancer.order([0, 2], k)[0] for k in keys}  # 1 is skipped (breaker)
    assert all(after[k] == before[k] for k in keys if before[k] != 1)
    moved = [after[k] for k in keys if before[k] == 1]
    assert set(moved) == {0, 2}  # its conversations spread over the rest


def test_sticky_without_a_conversation_is_weighted() -> None:
    firsts = _firsts(_balancer([3, 1], "sticky"), [0, 1], 4000)
    assert 0.72 < firsts[0] / 4000 < 0.78
