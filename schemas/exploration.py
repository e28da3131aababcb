"""Exploration: from scored candidates to the k items shown, with the propensity of each.

One definition for the two stages that must agree on it: serving draws every slate with
``Policy.choose`` and logs the propensities; the learner's off-policy gate asks the same
policy, through ``Policy.probabilities``, how likely a candidate snapshot would have been
to show each logged slot.

Per slot, without replacement: ``greedy`` (best remaining, propensity 1), ``epsilon``
(best remaining with probability 1 - eps, else uniform over the remaining candidates:
propensity (1 - eps) * [best] + eps / remaining), ``softmax`` (Plackett-Luce with
temperature tau: propensity = softmax over the remaining). The propensity recorded for
an item is that of its slot given the slots before it, which is what off-policy
estimators need; ``slate_propensity`` is their product.
"""

from __future__ import annotations

import math
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

    @classmethod
    def from_name(cls, name: str) -> Policy:
        """The policy a logged ``policy`` name stands for ("greedy", "epsilon-0.1",
        "softmax-2"); ValueError for any other name (a baseline's, say)."""
        kind, _, value = name.partition("-")
        try:
            if kind == "greedy" and not value:
                return cls("greedy")
            if kind == "epsilon":
                return cls("epsilon", epsilon=float(value))
            if kind == "softmax":
                return cls("softmax", temperature=float(value))
        except ValueError:
            pass
        raise ValueError(f"not a serving policy name: {name!r}")

    def slot_distributions(self, scores: np.ndarray, picks: np.ndarray) -> np.ndarray:
        """For B candidate lists and a slate logged over each, the probability of every
        candidate at every slot given the logged picks above it: [B, S, C].

        ``scores`` [B, C]: candidate scores, -inf for no candidate (a row may have fewer);
        ``picks`` [B, S]: the logged item's index into its row's candidates, -1 when it is
        not one. The rule is ``choose``'s: the best remaining is the highest score, the
        lowest index on ties. What an off-policy estimator needs of a target policy."""
        scores = np.asarray(scores, np.float64)
        picks = np.asarray(picks, np.int64)
        b, c = scores.shape
        rows = np.arange(b)
        taken = ~np.isfinite(scores)  # no candidate: never drawn, not counted
        out = np.zeros((b, picks.shape[1], c))
        for j in range(picks.shape[1]):
            free = ~taken
            left = free.sum(1)
            masked = np.where(free, scores, -np.inf)
            best = np.argmax(masked, axis=1)  # first of the highest: choose's tie rule
            dist = np.zeros((b, c))
            if self.exploration == "greedy":
                dist[rows, best] = 1.0
            elif self.exploration == "epsilon":
                dist = free * (self.epsilon / np.maximum(left, 1))[:, None]
                dist[rows, best] += 1 - self.epsilon
            else:
                top = np.where(left > 0, masked.max(1), 0.0)
                z = np.where(free, np.exp((masked - top[:, None]) / self.temperature), 0.0)
                dist = z / np.maximum(z.sum(1), 1e-300)[:, None]
            out[:, j] = np.where((left > 0)[:, None], dist, 0.0)
            pick = picks[:, j]
            seen = pick >= 0
            taken[rows[seen], pick[seen]] = True
        return out

    def probabilities(self, scores: np.ndarray, picks: np.ndarray) -> np.ndarray:
        """The probability that ``choose`` puts each logged pick in its slot given the
        picks above it, [B, S] (0 for a pick that is not a candidate): the per-slot
        conditional propensities ``choose`` logs, for slates it may not have drawn."""
        picks = np.asarray(picks, np.int64)
        dist = self.slot_distributions(scores, picks)
        got = np.take_along_axis(dist, np.maximum(picks, 0)[:, :, None], axis=2)[:, :, 0]
        # A pick shown twice, or not a candidate, is never drawn by this policy.
        repeated = np.array([[p in row[:j] for j, p in enumerate(row)] for row in picks.tolist()],
                            bool).reshape(picks.shape)  # fmt: skip
        out: np.ndarray = np.where((picks >= 0) & ~repeated, got, 0.0)
        return out


def slate_propensity(choice: Choice) -> float:
    return math.prod(choice.propensities)
