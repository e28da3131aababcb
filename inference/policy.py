"""Popularity (counts of interactions seen by this member, decayed): what ranks
candidates before the first snapshot and for shoppers with no known history. The
exploration that draws the shown slots from them is ``schemas.exploration``."""

from __future__ import annotations

import math
import time

import numpy as np

from schemas.records import CartEvent, ClickEvent, PurchaseEvent


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

    def count(self, event: ClickEvent | CartEvent | PurchaseEvent) -> None:
        """The items an interaction counts for: clicked, added to a cart, bought (a cart
        removal counts for none)."""
        if isinstance(event, PurchaseEvent):
            for line in event.items:
                self.add(line.item_id)
        elif not isinstance(event, CartEvent) or event.action == "add":
            self.add(event.item_id)

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
