"""The session-based baselines of the evaluation literature (Ludewig and Jannach, "Evaluation
of session-based recommendation algorithms", 2018), on ``recq evaluate``'s histories (the
target's session so far, its last ``HISTORY`` interactions):

- ``s-pop``: how often each item occurs in the current session, global popularity
  breaking ties (scaled below one occurrence). The only baseline here that ranks an
  item the shopper already touched in the session, which is a large share of real targets.
- ``item-knn``: cosine similarity of the last item to every item over training sessions,
  |S_i n S_j| / sqrt(|S_i| |S_j|), S_i the training sessions containing i.
- ``session-knn``: the ``k`` training sessions most similar to the current one (cosine of
  their item sets, |s n n| / sqrt(|s| |n|)) among ``sample`` candidates, the most recent
  training sessions that share an item with it; an item scores the summed similarity of
  the neighbours that contain it.

Each scores every item (a [B, N] tensor) like the other recommenders of
``recq.evaluation.models``, so one ranking and one tie rule apply to all.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from recq.evaluation.models import (
    CountingModel,
    Histories,
    Recommender,
    tie_breaking_popularity,
)
from recq.evaluation.protocol import Step


def _history_items(batch: Histories, row: int) -> list[int]:
    """The items of a history row, oldest first (padding left out)."""
    real = batch.events[row] > 0
    return [int(i) for i in batch.items[row][real].tolist()]


class SessionPopularity(CountingModel):
    name = "s-pop"

    def count(self, sessions: list[list[Step]], n_items: int) -> None:
        self.popularity = tie_breaking_popularity(sessions, n_items)

    def score(self, batch: Histories) -> torch.Tensor:
        scores = self.popularity.expand(batch.items.shape[0], -1).clone()
        for row in range(batch.items.shape[0]):
            for item in _history_items(batch, row):
                scores[row, item] += 1.0
        return scores


class ItemKNN(CountingModel):
    name = "item-knn"

    def count(self, sessions: list[list[Step]], n_items: int) -> None:
        self.n_items = n_items
        together: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        support = np.zeros(n_items)
        for xs in sessions:
            items = sorted({s.item for s in xs})
            support[items] += 1.0
            for a in items:
                for b in items:
                    if a != b:
                        together[a][b] += 1.0
        self.similar: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for a, row in together.items():
            others = np.fromiter(row.keys(), dtype=np.int64)
            counts = np.fromiter(row.values(), dtype=np.float64)
            self.similar[a] = (others, counts / np.sqrt(support[a] * support[others]))

    def score(self, batch: Histories) -> torch.Tensor:
        scores = np.zeros((batch.items.shape[0], self.n_items), dtype=np.float32)
        for row in range(batch.items.shape[0]):
            items = _history_items(batch, row)
            if items and items[-1] in self.similar:
                others, sims = self.similar[items[-1]]
                scores[row, others] = sims
        return torch.from_numpy(scores)


class SessionKNN(CountingModel):
    def __init__(self, k: int = 100, sample: int = 500) -> None:
        if k < 1 or sample < 1:
            raise ValueError(
                f"session-knn needs k >= 1 and sample >= 1, got k={k}, sample={sample}"
            )
        self.k, self.sample = k, sample
        self.name = "session-knn"

    def count(self, sessions: list[list[Step]], n_items: int) -> None:
        self.n_items = n_items
        # Training sessions, most recent last (by their last interaction's time).
        ordered = sorted(sessions, key=lambda xs: xs[-1].ts_ms if xs else 0)
        self.sets = [frozenset(s.item for s in xs) for xs in ordered]
        self.with_item: dict[int, list[int]] = defaultdict(list)  # item -> session ids, ascending
        for sid, items in enumerate(self.sets):
            for item in items:
                self.with_item[item].append(sid)

    def neighbours(self, current: set[int]) -> list[tuple[float, int]]:
        """(similarity, session id) of the k nearest among the ``sample`` most recent
        training sessions sharing an item with ``current``; ties go to the more recent."""
        candidates: set[int] = set()
        for item in current:
            candidates.update(self.with_item.get(item, ()))
        recent = sorted(candidates, reverse=True)[: self.sample]
        scored = [(len(current & self.sets[sid]) / math.sqrt(len(current) * len(self.sets[sid])),
                   sid) for sid in recent]  # fmt: skip
        scored.sort(key=lambda x: (-x[0], -x[1]))
        return scored[: self.k]

    def score(self, batch: Histories) -> torch.Tensor:
        scores = np.zeros((batch.items.shape[0], self.n_items), dtype=np.float32)
        for row in range(batch.items.shape[0]):
            current = set(_history_items(batch, row))
            if not current:
                continue
            for sim, sid in self.neighbours(current):
                scores[row, list(self.sets[sid])] += sim
        return torch.from_numpy(scores)


def session_baselines(k: int = 100, sample: int = 500) -> list[Recommender]:
    """S-POP, item-kNN and session-kNN (``k`` neighbours among ``sample`` candidates)."""
    return [SessionPopularity(), ItemKNN(), SessionKNN(k=k, sample=sample)]
