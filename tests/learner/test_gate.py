"""The off-policy gate on real ONNX snapshots and logged slates whose truth is known
(tests/toy_shop.py). Most slates are logged by a uniform random baseline (propensity
1/(20 - j)), some by serving's epsilon-0.1 popularity fallback: the exploration the gate
then assumes for its targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from learner.gate import Gate, SlateWindow, excluded_by_state
from schemas.model_store import ModelStore
from schemas.records import SlateTransition
from tests.toy_shop import (
    BAD,
    GOOD,
    SERVING,
    SLOTS,
    L,
    N,
    cascade,
    log_slates,
    on_policy_value,
    ranking_model,
    write_ranking,
)


def gate_with(tmp_path: Path, slates: list[SlateTransition], margin: float = 0.05) -> Gate:
    window = SlateWindow(10_000)
    window.add(slates)
    return Gate(
        window=window, store=ModelStore(tmp_path), policy=SERVING, margin=margin, min_slates=200
    )


@pytest.fixture(scope="module")
def slates() -> list[SlateTransition]:
    return log_slates(6_000, seed=1)


def test_a_good_first_snapshot_is_promoted_against_the_logging_policy(
    tmp_path: Path, slates: list[SlateTransition]
) -> None:
    model, _ = ranking_model(GOOD)
    result = gate_with(tmp_path, slates).judge(model, N, L)
    assert result.decision == "promoted" and result.against == "logging"
    # "current" is the logging policies' on-policy reward per slate over the slots
    # compared (those with enough matched slates): the logged mean of those slots
    assert 1 <= result.slots <= SLOTS
    logged_mean = np.mean([sum(t.rewards[: result.slots]) for t in slates])
    assert result.current == pytest.approx(logged_mean)
    truth = on_policy_value(GOOD, 40_000, seed=2, slots=result.slots)
    assert result.candidate == pytest.approx(truth, rel=0.10), (result, truth)
    assert result.low is not None and result.low > 0  # clearly better than logging


def test_a_worse_candidate_is_rejected_against_the_snapshot_serving(
    tmp_path: Path, slates: list[SlateTransition]
) -> None:
    write_ranking(tmp_path, GOOD)
    model, _ = ranking_model(BAD)
    result = gate_with(tmp_path, slates).judge(model, N, L)
    assert result.decision == "rejected" and result.against == "1"
    assert result.low is not None and result.current is not None and result.margin is not None
    assert result.low < -result.margin == pytest.approx(-0.05 * result.current)
    m = result.slots
    truth_bad = on_policy_value(BAD, 40_000, 3, slots=m)
    truth_good = on_policy_value(GOOD, 40_000, 4, slots=m)
    # Clipping (at 50) pulls a target far from the logging policies towards their mean
    # reward (0.27 per slate here): the bad ranking is over-valued, by up to half on one
    # log of 6,000 slates (0.129 - 0.223 over five logs against a truth of 0.147), still
    # far below the good one.
    assert result.candidate == pytest.approx(truth_bad, abs=0.08)
    assert result.candidate < 0.4 * truth_good
    assert result.current == pytest.approx(truth_good, rel=0.10)
    assert "below" in result.reason and "cascade_snips" in result.reason


def test_the_same_policy_is_promoted_and_a_margin_admits_a_small_loss(
    tmp_path: Path, slates: list[SlateTransition]
) -> None:
    write_ranking(tmp_path, GOOD)
    model, _ = ranking_model(GOOD)
    same = gate_with(tmp_path, slates).judge(model, N, L)
    assert same.decision == "promoted"
    assert (same.low, same.high) == (0.0, 0.0)  # identical on every resample
    # Swapping the 1st and 6th items (a liked item out of the top 5) costs some reward:
    worse = GOOD.copy()
    worse[[0, 5]] = worse[[5, 0]]
    model, _ = ranking_model(worse)
    strict = gate_with(tmp_path, slates, margin=0.0).judge(model, N, L)
    lenient = gate_with(tmp_path, slates, margin=1.0).judge(model, N, L)
    assert strict.decision == "rejected" and lenient.decision == "promoted"


def test_too_few_slates_cannot_be_judged(tmp_path: Path, slates: list[SlateTransition]) -> None:
    model, _ = ranking_model(BAD)
    result = gate_with(tmp_path, slates[:199]).judge(model, N, L)
    assert result.decision == "unjudged" and result.servable
    assert "RECQ_GATE_MIN_SLATES" in result.reason


def test_exclusions_rebuilt_from_the_state() -> None:
    items = np.array([1, 2, 3, 2, 4, 5])
    events = np.array([1, 2, 2, 4, 3, 2])  # click 1, cart 2, cart 3, remove 2, buy 4, cart 5
    assert excluded_by_state(items, events) == {3, 4, 5}


def test_a_candidate_the_logs_cannot_cover_is_rejected(tmp_path: Path) -> None:
    """Every slate logged greedily from one ranking (propensity 1): a candidate that
    ranks otherwise would show slates these logs almost never contain (coverage of its
    first slot 0.1/20 = 0.005), so no estimate of it is evidence."""
    rng = np.random.default_rng(4)
    logged = []
    for i, t in enumerate(log_slates(1_000, seed=5)):
        slate = GOOD[:SLOTS].tolist()
        rewards = cascade(rng, slate)
        logged.append(t.model_copy(update={
            "items": slate, "propensities": [1.0] * SLOTS, "policy": "greedy",
            "model_version": "popularity", "rewards": rewards,
            "responses": [int(r > 0) for r in rewards],
            "next_state": t.state if any(rewards) else None, "rec_id": f"g{i}",
        }))  # fmt: skip
    model, _ = ranking_model(BAD)
    result = gate_with(tmp_path, logged).judge(model, N, L)
    assert result.decision == "rejected" and result.slots == 0
    assert "do not support" in result.reason and "coverage 0.005" in result.reason
