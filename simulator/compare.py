"""Comparing arms of a closed loop honestly: each arm's reward per session with a 95%
bootstrap interval over shoppers, and the ratio of two arms with one.

Shoppers are the unit of resampling (each is assigned to one arm by a hash of their id
and comes back many times; their sessions are not independent draws). An arm's value is
the mean reward per session of its shoppers' sessions (sessions pooled, so a shopper
with more sessions weighs more, as in the live tables). Two arms hold different
shoppers, so a ratio's interval resamples both arms independently.

    >>> a = ArmRewards.of([("u1", 1.0), ("u1", 3.0), ("u2", 5.0)])
    >>> a.mean()  # (1 + 3 + 5) / 3 sessions
    3.0
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000


def arm_of(user_id: str, arms: Sequence[str], salt: str = "") -> str:
    """The arm a shopper belongs to: a stable hash of the id (not the order they came in)."""
    digest = hashlib.blake2b(f"{salt}{user_id}".encode(), digest_size=8).digest()
    return arms[int.from_bytes(digest, "big") % len(arms)]


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        return {"value": round(self.value, digits), "low": round(self.low, digits),
                "high": round(self.high, digits)}  # fmt: skip

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high


@dataclass(frozen=True)
class ArmRewards:
    """Per shopper: summed reward and number of sessions."""

    reward: np.ndarray  # [U]
    sessions: np.ndarray  # [U]

    @classmethod
    def of(cls, sessions: Iterable[tuple[str, float]]) -> ArmRewards:
        """From (user id, session reward) pairs."""
        total: dict[str, float] = defaultdict(float)
        count: dict[str, int] = defaultdict(int)
        for user, reward in sessions:
            total[user] += reward
            count[user] += 1
        users = sorted(total)
        return cls(np.array([total[u] for u in users], dtype=np.float64),
                   np.array([count[u] for u in users], dtype=np.float64))  # fmt: skip

    def __len__(self) -> int:
        return len(self.reward)

    def mean(self) -> float:
        n = float(self.sessions.sum())
        return float(self.reward.sum() / n) if n else 0.0

    def resampled(self, rng: np.random.Generator, resamples: int) -> np.ndarray:
        """The arm's reward per session in ``resamples`` resamples of its shoppers."""
        if len(self) == 0:
            return np.zeros(resamples)
        rows = rng.integers(len(self), size=(resamples, len(self)))
        sessions = self.sessions[rows].sum(1)
        return np.asarray(self.reward[rows].sum(1) / np.maximum(sessions, 1.0))


def _interval(point: float, draws: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return Interval(point, float(low), float(high))


def reward_interval(
    arm: ArmRewards, *, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0
) -> Interval:
    """Reward per session with a percentile interval over resampled shoppers."""
    draws = arm.resampled(np.random.default_rng(seed), resamples)
    return _interval(arm.mean(), draws, level)


def ratio_interval(
    arm: ArmRewards, baseline: ArmRewards, *, level: float = LEVEL,
    resamples: int = RESAMPLES, seed: int = 0,
) -> Interval:  # fmt: skip
    """arm / baseline reward per session, both arms' shoppers resampled independently."""
    rng = np.random.default_rng(seed)
    top, bottom = arm.resampled(rng, resamples), baseline.resampled(rng, resamples)
    point = arm.mean() / baseline.mean() if baseline.mean() else float("nan")
    return _interval(point, top / np.where(bottom == 0, np.nan, bottom), level)
