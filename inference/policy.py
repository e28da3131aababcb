"""From scored candidates to the k items shown, with the propensity of each.

Exploration per slot, without replacement: ``greedy`` (best remaining, propensity 1),
``epsilon`` (best remaining with probability 1 - eps, else uniform over the remaining
candidates: propensity (1 - eps) * [best] + eps / remaining), ``softmax`` (Plackett-Luce
with temperature tau: propensity = softmax over the remaining). The propensity recorded
for an item is that of its slot given the slots before it, which is what off-policy
estimators need; ``slate_propensity`` is their product.

Popularity (counts of interactions seen by this member, decayed) ranks candidates
before the first snapshot and for shoppers with no known history."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

Exploration = Literal["greedy", "epsilon", "softmax"]


@dataclass(frozen=True)
class Choice:
    positions: list[int]  # indices into the candidate arrays, in slot order
    propensities: list[float]


@dataclass(frozen=True)
class Policy:
    exploration: Exploration = "epsilon"
    epsilon: float = 0.1
    temperature: float = 1.0

    @property
    def name(self) -> str:
        if self.exploration == "epsilon":
            return f"epsilon-{self.epsilon:g}"
        if self.exploration == "softmax":
            return f"softmax-{self.temperature:g}"
        return "greedy"

    def choose(self, scores: np.ndarray, k: int, rng: np.random.Generator) -> Choice:
        """Pick ``min(k, len(scores))`` candidates (scores sorted or not)."""
        # Candidates in rank order once (ties: lower position first, as argmax would), so
        # the best remaining is always the head of the list: no per-slot scan.
        remaining: list[int] = np.argsort(-scores, kind="stable").tolist()
        slots = min(k, len(remaining))
        if self.exploration == "greedy":
            return Choice(remaining[:slots], [1.0] * slots)
        positions: list[int] = []
        propensities: list[float] = []
        for _ in range(slots):
            n = len(remaining)
            if self.exploration == "epsilon":
                pick = 0 if rng.random() >= self.epsilon else int(rng.integers(n))
                p = (1 - self.epsilon) * (pick == 0) + self.epsilon / n
            else:
                values = scores[remaining]
                z = np.exp((values - values[0]) / self.temperature)  # values[0] is the max
                probs = z / z.sum()
                # Inverse CDF (rng.choice with p= costs more than the rest of the slot).
                pick = min(int(np.searchsorted(np.cumsum(probs), rng.random(), "right")), n - 1)
                p = float(probs[pick])
            positions.append(remaining.pop(pick))
            propensities.append(min(1.0, max(p, 1e-12)))
        return Choice(positions, propensities)


def slate_propensity(choice: Choice) -> float:
    return math.prod(choice.propensities)


class Popularity:
    """Exponentially decayed interaction counts per item id (half-life in events).

    The ranking is re-sorted at most every ``refresh_s`` seconds (and at once while it is
    small): sorting a 50,000-item catalog per request would cost milliseconds, and a
    fallback ranking a second old is as good as a fresh one."""

    def __init__(self, half_life: int = 50_000, refresh_s: float = 1.0) -> None:
        self._decay = 0.5 ** (1 / half_life)
        self._weight = 1.0
        self._counts: dict[str, float] = {}
        self._refresh_s = refresh_s
        self._ranked: list[tuple[str, float]] = []
        self._ranked_at = -math.inf
        self._changed = False

    def add(self, item_id: str, amount: float = 1.0) -> None:
        # Instead of decaying every count, later events weigh more (renormalised rarely).
        self._weight /= self._decay
        self._counts[item_id] = self._counts.get(item_id, 0.0) + amount * self._weight
        self._changed = True
        if self._weight > 1e100:
            self._counts = {i: c / self._weight for i, c in self._counts.items()}
            self._ranked = [(i, c / self._weight) for i, c in self._ranked]
            self._weight = 1.0

    def _ranking(self) -> list[tuple[str, float]]:
        now = time.monotonic()
        small = len(self._counts) <= 1_000
        if self._changed and (small or now - self._ranked_at >= self._refresh_s):
            self._ranked = sorted(self._counts.items(), key=lambda kv: -kv[1])
            self._ranked_at, self._changed = now, False
        return self._ranked

    def top(self, n: int, exclude: set[str]) -> tuple[list[str], np.ndarray]:
        chosen: list[tuple[str, float]] = []
        for item, count in self._ranking():
            if item not in exclude:
                chosen.append((item, count))
                if len(chosen) == n:
                    break
        ids = [i for i, _ in chosen]
        # log-count scores: a softmax over them explores like one over model scores.
        scores = np.log1p(np.array([c / self._weight for _, c in chosen], np.float64))
        return ids, scores
