"""Off-policy estimators: hand-computed values, and unbiasedness on a synthetic
position-based bandit whose true value is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from learner.ope import (
    LoggedSlates,
    bootstrap,
    cascade_dr,
    cascade_ips,
    cascade_snips,
    paired_bootstrap,
    slate_snips,
    slot_dr,
    slot_ips,
    slot_snips,
)

#: Three logged slates of two slots (all shown), written out by hand.
MU = np.array([[0.5, 0.5], [0.25, 1.0], [1.0, 0.5]])
PI = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
R = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Q_LOGGED = np.full((3, 2), 0.5)
Q_TARGET = np.array([[0.6, 0.2]] * 3)


def hand(clip: float = 100.0) -> LoggedSlates:
    return LoggedSlates(np.ones((3, 2), bool), MU, PI, R, Q_LOGGED, Q_TARGET, clip)


def test_estimators_match_hand_computations() -> None:
    # slot weights pi/mu: [[2, 0], [4, 1], [0, 2]]
    assert slot_ips(hand()) == pytest.approx((2 + 1 + 2) / 3)
    # slot 0: sum w r = 2, sum w = 6; slot 1: sum w r = 3, sum w = 3
    assert slot_snips(hand()) == pytest.approx(2 / 6 + 3 / 3)
    # slate weights: [0, 4, 0]; slate rewards [1, 1, 2]
    assert slate_snips(hand()) == pytest.approx(1.0)
    # q_target + w (r - q_logged), summed over slots: 1.8, -0.7, 1.8
    assert slot_dr(hand()) == pytest.approx((1.8 - 0.7 + 1.8) / 3)
    # clipped at 3: the second slate's first weight 4 -> 3
    assert slot_dr(hand(clip=3.0)) == pytest.approx((1.8 - 0.2 + 1.8) / 3)


def test_cascade_estimators_match_hand_computations() -> None:
    # prefix weights prod_{l<=j} pi/mu: [[2, 2*0], [4, 4*1], [0, 0*2]]
    assert cascade_ips(hand()) == pytest.approx((2 * 1 + 4 * 1) / 3)
    # slot 0: sum W r = 2, sum W = 6; slot 1: sum W r = 4, sum W = 4
    assert cascade_snips(hand()) == pytest.approx(2 / 6 + 4 / 4)
    # W (r - q_logged) + W_above q_target, W_above = [[1, 2], [1, 4], [1, 0]]:
    # row 0: 2(0.5) + 0.6 + 0 + 2(0.2) = 2.0; row 1: 4(-0.5) + 0.6 + 4(0.5) + 4(0.2) = 1.4;
    # row 2: 0 + 0.6 + 0 + 0 = 0.6
    assert cascade_dr(hand()) == pytest.approx((2.0 + 1.4 + 0.6) / 3)
    # clipped at 3: row 1's weights 4, 4 -> 3, 3; its DR term 3(-0.5) + 0.6 + 3(0.5) + 3(0.2)
    assert cascade_ips(hand(clip=3.0)) == pytest.approx((2 + 3) / 3)
    assert cascade_dr(hand(clip=3.0)) == pytest.approx((2.0 + 1.2 + 0.6) / 3)


def test_coverage_is_the_mean_unclipped_prefix_weight() -> None:
    # unclipped prefix weights [[2, 0], [4, 4], [0, 0]]
    assert hand(clip=3.0).coverage() == pytest.approx([6 / 3, 4 / 3])


def test_paired_bootstrap_is_the_difference_on_the_same_slates() -> None:
    a = hand()
    b = LoggedSlates(a.shown, a.logging, a.logging.copy(), a.reward)  # the logging policy
    interval = paired_bootstrap(cascade_snips, a, b, resamples=100, seed=0)
    assert interval.estimate == pytest.approx(cascade_snips(a) - cascade_snips(b))
    assert interval.low <= interval.high
    same = paired_bootstrap(cascade_snips, a, a, resamples=50, seed=0)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_unshown_slots_count_for_nothing() -> None:
    shown = np.array([[True, False], [True, True], [True, True]])
    data = LoggedSlates(shown, MU, PI, R, Q_LOGGED, Q_TARGET)
    assert slot_ips(data) == pytest.approx((2 + 1 + 2) / 3)  # slot (0, 1) had weight 0 anyway
    assert slot_dr(data) == pytest.approx((1.6 - 0.7 + 1.8) / 3)


N_ITEMS, SLOTS = 10, 2
ATTRACT = np.linspace(0.1, 0.6, N_ITEMS)
EXAMINE = np.array([1.0, 0.6])
TARGET = np.array([9, 4])  # a deterministic target slate
TRUTH = float(sum(ATTRACT[a] * EXAMINE[j] for j, a in enumerate(TARGET)))


def uniform_log(
    n: int, rng: np.random.Generator, marginal: bool
) -> tuple[LoggedSlates, np.ndarray]:
    """Uniform random slates (no repeats); clicks by the position-based model. Returns
    the log with marginal (1/N) or conditional (1/(N-j)) slot propensities, and the
    slate propensities (product of the conditionals)."""
    items = np.argsort(rng.random((n, N_ITEMS)), 1)[:, :SLOTS]
    reward = (rng.random((n, SLOTS)) < ATTRACT[items] * EXAMINE).astype(float)
    conditional = np.array([[1 / (N_ITEMS - j) for j in range(SLOTS)]] * n)
    mu = np.full((n, SLOTS), 1 / N_ITEMS) if marginal else conditional
    pi = (items == TARGET).astype(float)
    q_logged = np.full((n, SLOTS), 0.3)  # a poor reward model: DR must stay unbiased
    q_target = np.full((n, SLOTS), 0.3)
    return LoggedSlates(np.ones((n, SLOTS), bool), mu, pi, reward, q_logged, q_target), items


def test_slot_estimators_are_unbiased_with_marginal_propensities() -> None:
    """On 40,000 uniformly logged slates each estimate is within 4 standard errors
    (bootstrap) of the exact value of the target slate (false alarm ~1e-4 per check)."""
    rng = np.random.default_rng(0)
    data, _ = uniform_log(40_000, rng, marginal=True)
    for estimator in (slot_ips, slot_snips, slot_dr):
        interval = bootstrap(estimator, data, resamples=200, level=0.6827, seed=1)
        se = (interval.high - interval.low) / 2
        assert abs(interval.estimate - TRUTH) < 4 * se, (estimator.__name__, interval, TRUTH)


def test_conditional_propensities_bias_later_slots_and_slate_snips_does_not_care() -> None:
    """With the conditional propensities serving logs, per-slot IPS over-weights slot j
    by N / (N - j) (here slot 1 by 10/9); whole-slate SNIPS uses their product, the exact
    slate probability, and stays unbiased."""
    rng = np.random.default_rng(2)
    data, _ = uniform_log(60_000, rng, marginal=False)
    biased = TRUTH + ATTRACT[TARGET[1]] * EXAMINE[1] * (N_ITEMS / (N_ITEMS - 1) - 1)
    interval = bootstrap(slot_ips, data, resamples=200, level=0.6827, seed=3)
    se = (interval.high - interval.low) / 2
    assert abs(interval.estimate - biased) < 4 * se
    interval = bootstrap(slate_snips, data, resamples=200, level=0.6827, seed=4)
    se = (interval.high - interval.low) / 2
    assert abs(interval.estimate - TRUTH) < 4 * se, (interval, TRUTH)


#: A cascade: slot j is examined with probability EXAMINE_CASCADE[j] if no slot above it
#: was clicked; an examined item is clicked with probability ATTRACT[item].
EXAMINE_CASCADE = np.array([1.0, 0.7, 0.5])


def cascade_truth_of_target(target: np.ndarray) -> float:
    """Expected clicks of a deterministic slate under the cascade, from the rule above."""
    value, not_clicked = 0.0, 1.0
    for j, item in enumerate(target):
        click = EXAMINE_CASCADE[j] * ATTRACT[item]
        value += not_clicked * click
        not_clicked *= 1 - click
    return value


def test_cascade_estimators_are_unbiased_with_logged_conditional_propensities() -> None:
    """Epsilon-greedy logging over a fixed ranking (propensities as serving logs them:
    each slot's given the slots above), a cascade click model, and a deterministic target
    that differs from the logger's ranking in its second and third slots: cascade IPS,
    SNIPS and DR land within 4 bootstrap standard errors of the exact value computed from
    the cascade rule, and slot SNIPS (position-based, over-crediting slots below a
    click) does not."""
    from schemas.exploration import Policy

    rng = np.random.default_rng(5)
    n, slots = 30_000, 3
    logger = Policy("epsilon", epsilon=0.5)
    scores = ATTRACT[::-1].copy()  # a poor logger: ranks the least attractive first
    target = np.array([9, 8, 7])
    truth = cascade_truth_of_target(target)
    mu, pi, reward = np.zeros((n, slots)), np.zeros((n, slots)), np.zeros((n, slots))
    for i in range(n):
        choice = logger.choose(scores, slots, rng)
        items = np.array(choice.positions)  # candidate index == item index here
        mu[i] = choice.propensities
        pi[i] = (items == target).astype(float)  # target's conditional given a matched prefix
        for j, item in enumerate(items):
            if rng.random() < EXAMINE_CASCADE[j] and rng.random() < ATTRACT[item]:
                reward[i, j] = 1.0
                break
    q = np.full((n, slots), 0.2)  # a poor reward model
    data = LoggedSlates(np.ones((n, slots), bool), mu, pi, reward, q, q, clip=1e9)
    for estimator in (cascade_ips, cascade_snips, cascade_dr):
        interval = bootstrap(estimator, data, resamples=200, level=0.6827, seed=6)
        se = (interval.high - interval.low) / 2
        assert abs(interval.estimate - truth) < 4 * se, (estimator.__name__, interval, truth)
    position_based = bootstrap(slot_snips, data, resamples=200, level=0.6827, seed=7)
    se = (position_based.high - position_based.low) / 2
    assert abs(position_based.estimate - truth) > 4 * se, (position_based, truth)


def test_the_poisson_bootstrap_of_snips_agrees_with_resampling_the_log() -> None:
    """The gate's fast paired bootstrap (counts x terms) against the general one (copies
    of resampled logs): the same difference, and 90% intervals within 20% of each other's
    width on 4,000 slates."""
    from learner.ope import cascade_snips_terms, paired_snips_bootstrap

    rng = np.random.default_rng(8)
    data, items = uniform_log(4_000, rng, marginal=False)
    other = LoggedSlates(data.shown, data.logging, (items == [4, 9]).astype(float), data.reward)
    slow = paired_bootstrap(cascade_snips, data, other, resamples=400, level=0.9, seed=1)
    fast = paired_snips_bootstrap(cascade_snips_terms(data), cascade_snips_terms(other),
                                  resamples=400, level=0.9, seed=1)  # fmt: skip
    assert fast.estimate == pytest.approx(slow.estimate)
    assert fast.high - fast.low == pytest.approx(slow.high - slow.low, rel=0.2)
    assert fast.low < fast.estimate < fast.high
