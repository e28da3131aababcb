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


#: Rows from which ``Policy.choose_batch`` draws all slates in array passes.
VECTORIZE_FROM = 64


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
        """Pick ``min(k, len(scores))`` candidates (scores sorted or not): the per-slot
        reference; serving answers a micro-batch with ``choose_batch``, which gives the
        same slates and propensities from the same generator state.

        Randomness: ``rng.random((k, 2))`` per call, whatever the policy draws of it (slot
        j explores when u[j, 0] < epsilon and then takes the remaining candidate at
        floor(u[j, 1] * remaining); softmax inverts its CDF at u[j, 0])."""
        # Candidates in rank order once (ties: lower position first, as argmax would), so
        # the best remaining is always the head of the list: no per-slot scan.
        remaining: list[int] = np.argsort(-scores, kind="stable").tolist()
        slots = min(k, len(remaining))
        if self.exploration == "greedy":
            return Choice(remaining[:slots], [1.0] * slots)
        u = rng.random((k, 2))
        positions: list[int] = []
        propensities: list[float] = []
        for j in range(slots):
            n = len(remaining)
            if self.exploration == "epsilon":
                pick = min(int(u[j, 1] * n), n - 1) if u[j, 0] < self.epsilon else 0
                p = (1 - self.epsilon) * (pick == 0) + self.epsilon / n
            else:
                values = scores[remaining]
                z = np.exp((values - values[0]) / self.temperature)  # values[0] is the max
                cdf = np.cumsum(z)
                # Inverse CDF (rng.choice with p= costs more than the rest of the slot).
                pick = min(int(np.searchsorted(cdf, u[j, 0] * cdf[-1], "right")), n - 1)
                p = float(z[pick] / cdf[-1])
            positions.append(remaining.pop(pick))
            propensities.append(min(1.0, max(p, 1e-12)))
        return Choice(positions, propensities)

    def choose_batch(
        self, scores: list[np.ndarray], ks: list[int], rng: np.random.Generator
    ) -> list[Choice]:
        """``choose`` for each row (``scores[i]``, ``ks[i]``) in order: the same draws,
        slates and propensities as calling ``choose`` row after row with the same
        generator. From ``VECTORIZE_FROM`` rows on, slot by slot for all rows at once
        (epsilon, 50 candidates, k 10: 7 against 12 us a slate at 256 rows; below 64 rows
        the array passes cost more than they save: 377 against 11 us at one row)."""
        b = len(scores)
        if b < VECTORIZE_FROM:
            return [self.choose(row, k, rng) for row, k in zip(scores, ks, strict=True)]
        width = max(1, max(len(row) for row in scores))
        padded = np.full((b, width), -np.inf)
        for i, row in enumerate(scores):
            padded[i, : len(row)] = row
        counts = np.array([len(row) for row in scores])
        # Rank order per row (stable: ties keep the lower position); padding sorts last.
        order = np.argsort(-padded, axis=1, kind="stable")
        ranked = np.take_along_axis(padded, order, 1)
        slots = np.minimum(np.array(ks), counts)
        if self.exploration == "greedy":
            return [Choice(order[i, : slots[i]].tolist(), [1.0] * int(slots[i])) for i in range(b)]
        # The generator's draws in the order row-by-row ``choose`` makes them.
        draws = rng.random((int(sum(ks)), 2))
        starts = np.concatenate([[0], np.cumsum(ks)[:-1]]).astype(np.int64)
        rows = np.arange(b)
        free = np.arange(width)[None, :] < counts[:, None]  # rank positions not yet shown
        picks = np.zeros((b, width), np.int64)
        probs = np.ones((b, width))
        for j in range(int(slots.max(initial=0))):
            live = j < slots
            u = draws[np.minimum(starts + j, len(draws) - 1)]
            n = counts - j
            if self.exploration == "epsilon":
                explore = u[:, 0] < self.epsilon
                m = np.where(explore, np.minimum((u[:, 1] * n).astype(np.int64), n - 1), 0)
                p = (1 - self.epsilon) * (m == 0) + self.epsilon / np.maximum(n, 1)
                # The m-th free rank position: the first where the running count passes m.
                at = np.argmax(np.cumsum(free, axis=1) > m[:, None], axis=1)
            else:
                top = np.max(np.where(free, ranked, -np.inf), axis=1)
                with np.errstate(invalid="ignore"):
                    z = np.where(free, np.exp((ranked - top[:, None]) / self.temperature), 0.0)
                cdf = np.cumsum(z, axis=1)
                total = cdf[:, -1]
                at = np.argmax(cdf > (u[:, 0] * total)[:, None], axis=1)
                # Past the last free position (u * total rounding to total): the last one.
                last = width - 1 - np.argmax(free[:, ::-1], axis=1)
                at = np.where(cdf[rows, at] > u[:, 0] * total, at, last)
                p = z[rows, at] / np.maximum(total, 1e-300)
            at = np.where(live, at, 0)
            picks[:, j] = order[rows, at]
            probs[:, j] = np.clip(p, 1e-12, 1.0)
            free[rows[live], at[live]] = False
        return [Choice(picks[i, : slots[i]].tolist(), probs[i, : slots[i]].tolist())
                for i in range(b)]  # fmt: skip

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
