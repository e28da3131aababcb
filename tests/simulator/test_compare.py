"""Arm comparison: per-shopper pooling, bootstrap intervals, ratios, hashed arms."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from simulator.compare import ArmRewards, arm_of, ratio_interval, reward_interval


def test_reward_per_session_pools_each_shoppers_sessions() -> None:
    arm = ArmRewards.of([("a", 1.0), ("b", 4.0), ("a", 1.0), ("a", 1.0)])
    assert arm.mean() == pytest.approx(7.0 / 4)
    assert sorted(arm.sessions.tolist()) == [1.0, 3.0]


def test_an_arm_whose_shoppers_all_earn_the_same_has_a_zero_width_interval() -> None:
    arm = ArmRewards.of([(f"u{i}", 0.5) for i in range(30)] + [("u0", 0.5)])
    interval = reward_interval(arm, resamples=200)
    assert (interval.value, interval.low, interval.high) == pytest.approx((0.5, 0.5, 0.5))
    double = ArmRewards.of([(f"v{i}", 1.0) for i in range(10)])
    ratio = ratio_interval(double, arm, resamples=200)
    assert (ratio.value, ratio.low, ratio.high) == pytest.approx((2.0, 2.0, 2.0))


def test_the_interval_covers_the_mean_and_narrows_with_more_shoppers() -> None:
    rng = np.random.default_rng(0)
    small = ArmRewards.of((f"u{i}", float(x)) for i, x in enumerate(rng.exponential(1.0, 50)))
    large = ArmRewards.of((f"u{i}", float(x)) for i, x in enumerate(rng.exponential(1.0, 5000)))
    a, b = reward_interval(small), reward_interval(large)
    assert a.low < a.value < a.high and b.low < b.value < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5  # ~ sqrt(100) = 10x narrower
    assert b.low < 1.0 < b.high  # the true mean of Exp(1)


def test_arms_are_a_stable_hash_of_the_shopper_and_roughly_balanced() -> None:
    arms = ("x", "y", "z")
    assert arm_of("shopper-1", arms) == arm_of("shopper-1", arms)
    counts = Counter(arm_of(f"shopper-{i}", arms) for i in range(3000))
    assert set(counts) == set(arms) and min(counts.values()) > 900
    assert arm_of("shopper-1", arms, salt="1") in arms
