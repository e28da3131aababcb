"""The online guard: its test statistic by hand, its false-alarm rate measured under no
difference, and a deliberately bad snapshot (well-formed, promoted) rolled back while
serving members follow the pin."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from inference.registry import SnapshotRegistry
from learner.guard import Earnings, OnlineGuard, msprt
from schemas.model_store import ModelStore
from schemas.records import InteractionSequence, SlateTransition
from tests.toy_shop import BAD, GOOD, SERVING, SLOTS, L, cascade, write_ranking


def earnings(rewards: list[float]) -> Earnings:
    e = Earnings()
    for r in rewards:
        e.add(r)
    return e


def slate(version: str, rewards: list[float], i: int = 0) -> SlateTransition:
    state = InteractionSequence(items=[0], events=[1], ages=[1])
    return SlateTransition(
        user_id=f"u{i}", seq=0, rec_id=f"r{i}", policy=SERVING.name, model_version=version,
        state=state, items=list(range(len(rewards))), propensities=[1.0] * len(rewards),
        shown=[True] * len(rewards), responses=[int(r > 0) for r in rewards], rewards=rewards,
        next_state=state if any(rewards) else None, done=False, closed_by="reward_wait",
        ts_ms=1_700_000_000_000 + i,
    )  # fmt: skip


def test_msprt_by_hand() -> None:
    served = earnings([0, 0, 1, 0])  # mean 0.25, sample variance 0.25
    reference = earnings([1, 0, 1, 1])  # mean 0.75, sample variance 0.25
    v = 0.25 / 4 + 0.25 / 4
    tau = 0.5
    expected = math.sqrt(v / (v + tau**2)) * math.exp(0.5**2 * tau**2 / (2 * v * (v + tau**2)))
    assert msprt(served, reference, tau) == pytest.approx(expected)
    assert msprt(reference, reference, tau) == pytest.approx(math.sqrt(v / (v + tau**2)))


def test_false_alarm_rate_under_no_difference_is_below_alpha() -> None:
    """300 runs in which the served snapshot earns exactly what its reference did (10%
    click per impression): the reference's 1,000 impressions are frozen, the served one
    is checked after every 100 of its impressions up to 20,000. The guard may fire in at
    most alpha = 5% of runs (measured when written: 1.0% of 1,000 runs at alpha 5%,
    0.4% at the default 1%)."""
    rng = np.random.default_rng(0)
    runs, fired = 300, 0
    for _ in range(runs):
        reference = earnings(list((rng.random(1_000) < 0.1).astype(float)))
        served = Earnings()
        for _ in range(200):
            for r in (rng.random(100) < 0.1).astype(float):
                served.add(float(r))
            if (
                served.mean < reference.mean
                and msprt(served, reference, 0.2 * reference.mean) >= 20
            ):
                fired += 1
                break
    assert fired / runs <= 0.05, f"false alarms in {fired} of {runs} runs"


def test_a_drop_is_found_and_the_reference_pinned(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for order in (GOOD, BAD):  # snapshots 1 and 2 in the store
        write_ranking(tmp_path, order)
    guard = OnlineGuard(store, alpha=0.01, min_impressions=1_000)
    rng = np.random.default_rng(1)
    for i in range(500):  # snapshot 1: 12% of impressions clicked
        assert guard.observe([slate("1", list((rng.random(3) < 0.12).astype(float)), i)]) is None
    assert guard.observe([slate("popularity", [1.0, 1.0, 1.0])]) is None  # not a snapshot
    rollback = None
    for i in range(5_000):  # snapshot 2: 6%
        rollback = guard.observe([slate("2", list((rng.random(3) < 0.06).astype(float)), i)])
        if rollback is not None:
            break
    assert rollback is not None and (rollback.served, rollback.reference) == (2, 1)
    assert rollback.impressions[0] < 3_000, rollback  # found within ~1,000 slates
    assert store.pin_record() == {"version": 1, "by": "guard", "reason": rollback.describe()}
    # Snapshot 3 is compared with 1, not with the rolled-back 2.
    for i in range(400):
        guard.observe([slate("3", list((rng.random(3) < 0.12).astype(float)), i)])
    assert guard.fired == [rollback]


def test_an_injected_bad_snapshot_is_rolled_back(tmp_path: Path) -> None:
    """Serving members follow the store: a good snapshot serves, then a bad one (ranks
    the liked items last; well-formed, promoted) replaces it. Shoppers of the toy shop
    answer what the registry's current snapshot recommends, with serving's exploration;
    their closed slates reach the guard. The guard pins the good one and the registry,
    following the pin, serves it again."""
    rng = np.random.default_rng(2)
    write_ranking(tmp_path, GOOD)
    registry = SnapshotRegistry(tmp_path)
    guard = OnlineGuard(registry.store, alpha=0.01, min_impressions=600)

    def shoppers_answer(slates: int) -> None:
        model = registry.current
        assert model is not None
        items = np.zeros((slates, L), np.int64)
        events = np.zeros((slates, L), np.int64)
        events[:, -1] = 1
        items[:, -1] = rng.integers(len(model.item_ids), size=slates)
        indices, scores = model.predict(items, events, events.copy(), np.full((slates, 1), -1))
        for i in range(slates):
            shown = indices[i][SERVING.choose(scores[i], SLOTS, rng).positions]
            guard.observe([slate(str(model.version), cascade(rng, shown), i)])

    assert registry.scan() is not None and registry.current.version == 1  # type: ignore[union-attr]
    shoppers_answer(400)
    bad = write_ranking(tmp_path, BAD)
    assert registry.offer(bad.version, bad.path.name, bad.manifest.model_sha256)
    for _ in range(20):
        shoppers_answer(50)
        registry.follow_pin()
        if registry.current is not None and registry.current.version == 1:
            break
    assert registry.current is not None and registry.current.version == 1, guard.fired
    assert [(r.served, r.reference) for r in guard.fired] == [(2, 1)]
    assert registry.store.pin_record()["by"] == "guard"  # type: ignore[index]


def test_no_pin_to_a_snapshot_no_longer_in_the_store(tmp_path: Path) -> None:
    """Slates re-read after a restart can compare snapshots pruned long ago: a pin to
    one could not be served, so the guard says so and pins nothing."""
    store = ModelStore(tmp_path)
    guard = OnlineGuard(store, alpha=0.01, min_impressions=300)
    rng = np.random.default_rng(3)
    for i in range(200):
        guard.observe([slate("1", list((rng.random(3) < 0.15).astype(float)), i)])
    for i in range(2_000):
        assert guard.observe([slate("2", list((rng.random(3) < 0.02).astype(float)), i)]) is None
    assert store.pin_record() is None and guard.fired == []
    assert 2 in guard.rolled_back  # judged once, not again on every slate
