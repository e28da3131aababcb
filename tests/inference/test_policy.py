"""Exploration: recorded propensities are the probabilities the policy actually had."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from inference.policy import Popularity
from schemas.exploration import VECTORIZE_FROM, Policy, slate_propensity

SCORES = np.array([2.0, 1.5, 0.3, -1.0, 0.9])


@pytest.mark.parametrize(
    "policy", [Policy("epsilon", epsilon=0.3), Policy("softmax", temperature=0.7)]
)
def test_first_slot_frequencies_match_recorded_propensities(policy: Policy) -> None:
    rng = np.random.default_rng(11)
    draws, recorded = Counter(), {}  # type: Counter[int], dict[int, float]
    n = 20_000
    for _ in range(n):
        choice = policy.choose(SCORES, 3, rng)
        first = choice.positions[0]
        draws[first] += 1
        recorded.setdefault(first, choice.propensities[0])
        assert recorded[first] == pytest.approx(choice.propensities[0])  # same state, same p
        assert len(set(choice.positions)) == 3  # without replacement
    for item, count in draws.items():
        p = recorded[item]
        assert abs(count / n - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3, (item, count / n, p)


def test_epsilon_greedy_propensity_formula() -> None:
    rng = np.random.default_rng(0)
    policy = Policy("epsilon", epsilon=0.2)
    seen = set()
    for _ in range(200):
        choice = policy.choose(SCORES, 2, rng)
        first, second = choice.positions
        best = 0
        assert choice.propensities[0] == pytest.approx(0.8 * (first == best) + 0.2 / 5)
        best_left = max((i for i in range(5) if i != first), key=lambda i: SCORES[i])
        assert choice.propensities[1] == pytest.approx(0.8 * (second == best_left) + 0.2 / 4)
        seen.add(first)
    assert seen == set(range(5))  # exploration reaches every candidate
    assert slate_propensity(choice) == pytest.approx(
        choice.propensities[0] * choice.propensities[1]
    )


def test_greedy_is_the_ranking_with_propensity_one() -> None:
    choice = Policy("greedy").choose(SCORES, 4, np.random.default_rng(0))
    assert choice.positions == [0, 1, 4, 2] and choice.propensities == [1.0] * 4


def test_popularity_prefers_recent_interactions_and_honours_exclusions() -> None:
    pop = Popularity(half_life=10)
    for _ in range(30):
        pop.add("old")
    for _ in range(12):
        pop.add("new")
    ids, scores = pop.top(5, exclude=set())
    assert ids == ["new", "old"] and scores[0] > scores[1]
    assert pop.top(5, exclude={"new"})[0] == ["old"]


def test_large_popularity_ranking_is_refreshed_at_most_every_refresh_s() -> None:
    pop = Popularity(refresh_s=3600)
    for i in range(1_500):
        pop.add(f"sku-{i}", amount=float(i))
    assert pop.top(2, exclude=set())[0] == ["sku-1499", "sku-1498"]
    pop.add("sku-0", amount=1e9)  # within refresh_s: the cached ranking answers
    assert pop.top(1, exclude=set())[0] == ["sku-1499"]
    fresh = Popularity(refresh_s=0)
    for i in range(1_500):
        fresh.add(f"sku-{i}", amount=float(i))
    fresh.add("sku-0", amount=1e9)
    assert fresh.top(1, exclude=set())[0] == ["sku-0"]


def test_probabilities_of_a_logged_slate_by_hand() -> None:
    """Candidates scored [3, 2, 1, 0]; the logged slate shows candidates 1, 0, 3."""
    scores = np.array([[3.0, 2.0, 1.0, 0.0]])
    picks = np.array([[1, 0, 3]])
    # epsilon 0.2: slot 0 picks a non-best of 4: 0.2/4; slot 1 picks the best remaining
    # (0) of 3: 0.8 + 0.2/3; slot 2 picks a non-best (best is 2) of 2: 0.2/2
    got = Policy("epsilon", epsilon=0.2).probabilities(scores, picks)[0]
    assert got == pytest.approx([0.05, 0.8 + 0.2 / 3, 0.1])
    # softmax tau 1: e^2/(e^3+e^2+e^1+1), e^3/(e^3+e^1+1), 1/(e^1+1)
    e = np.e
    got = Policy("softmax", temperature=1.0).probabilities(scores, picks)[0]
    assert got == pytest.approx([e**2 / (e**3 + e**2 + e + 1), e**3 / (e**3 + e + 1), 1 / (e + 1)])
    assert Policy("greedy").probabilities(scores, picks)[0] == pytest.approx([0, 1, 0])
    # a pick that is not a candidate (-1), a repeated pick, a row with no candidates
    # past the second: probability 0, and the others as if it were not there
    scores = np.array([[3.0, 2.0, -np.inf, -np.inf]])
    got = Policy("epsilon", epsilon=0.2).probabilities(scores, np.array([[-1, 0, 0]]))[0]
    assert got == pytest.approx([0.0, 0.8 + 0.2 / 2, 0.0])


@pytest.mark.parametrize(
    "policy", [Policy("epsilon", epsilon=0.3), Policy("softmax", temperature=0.5)],
    ids=lambda p: p.name,
)  # fmt: skip
def test_probabilities_are_the_propensities_choose_logs(policy: Policy) -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        scores = rng.normal(size=8)
        choice = policy.choose(scores, 4, rng)
        got = policy.probabilities(scores[None], np.array([choice.positions]))[0]
        assert got == pytest.approx(choice.propensities)


def test_policy_names_round_trip() -> None:
    for policy in (
        Policy("greedy"),
        Policy("epsilon", epsilon=0.15),
        Policy("softmax", temperature=2.0),
    ):
        assert Policy.from_name(policy.name) == policy
    for name in ("random", "popularity", "epsilon-x", "greedy-1"):
        with pytest.raises(ValueError, match="not a serving policy"):
            Policy.from_name(name)


@pytest.mark.parametrize("policy", [Policy("greedy"), Policy("epsilon", epsilon=0.1),
                                    Policy("epsilon", epsilon=0.7),
                                    Policy("softmax", temperature=0.3),
                                    Policy("softmax", temperature=3.0)], ids=str)  # fmt: skip
def test_a_batch_draws_the_slates_and_propensities_of_row_by_row_choices(policy: Policy) -> None:
    data = np.random.default_rng(42)
    # Over VECTORIZE_FROM rows: the array passes, not the row-by-row loop.
    rows = [np.round(data.normal(size=n), 1) for n in data.integers(0, 30, 200)]  # ties too
    rows += [np.zeros(0), np.ones(3), np.array([5.0])]
    ks = [int(k) for k in data.integers(1, 12, len(rows))]
    reference_rng, batch_rng = np.random.default_rng(7), np.random.default_rng(7)
    reference = [policy.choose(row, k, reference_rng) for row, k in zip(rows, ks, strict=True)]
    assert len(rows) >= VECTORIZE_FROM
    batch = policy.choose_batch(rows, ks, batch_rng)
    for want, got in zip(reference, batch, strict=True):
        assert got.positions == want.positions
        np.testing.assert_allclose(got.propensities, want.propensities, rtol=1e-12)
    # Both consumed the generator alike: the next draws agree.
    assert reference_rng.random() == batch_rng.random()
