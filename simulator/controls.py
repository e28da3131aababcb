"""Controls: what a shop would deploy instead of recq, run by the simulated shop beside
the learned arm and logged like any policy (the learner learns from their slates too).

``CoView``: item-to-item co-occurrence within a shopper's session, updated online (each
click counts with the previous ``WINDOW`` clicks of the session, both ways); a candidate
is scored by its co-occurrence with the last three items of the history (newest weighted
most), popularity breaking ties: the online form of ``recq evaluate``'s
``cooccurrence`` and the co-view counters shops run.

    >>> c = CoView(4)
    >>> for item in (0, 1, 2):
    ...     c.observe("u", item)
    >>> int(c.scores([1]).argmax())  # 1 was viewed with 0 and 2; 0 came first, ties go low
    0
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

WINDOW = 3
RECENCY = (1.0, 0.6, 0.3)  # weights of the last, second-last and third-last item


class CoView:
    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.pairs: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(n_items))
        self.popularity = np.zeros(n_items)
        self._session: dict[str, list[int]] = defaultdict(list)

    def observe(self, user: str, item: int) -> None:
        """A click of ``user`` on ``item`` in their current session."""
        recent = self._session[user][-WINDOW:]
        for other in recent:
            if other != item:
                self.pairs[other][item] += 1.0
                self.pairs[item][other] += 1.0
        self._session[user].append(item)
        self.popularity[item] += 1.0

    def end_session(self, user: str) -> None:
        self._session.pop(user, None)

    def scores(self, history: list[int]) -> np.ndarray:
        score = np.zeros(self.n_items)
        for weight, item in zip(RECENCY, reversed(history[-len(RECENCY) :]), strict=False):
            if item in self.pairs:
                score += weight * self.pairs[item]
        # Popularity below one co-occurrence: it orders what co-occurrence leaves tied.
        top = self.popularity.max()
        return score + (self.popularity / top * 0.5 if top else 0.0)
