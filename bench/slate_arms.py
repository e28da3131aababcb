"""The controls of the offline closed loop (bench/slate_loop.py): what a shop would deploy
instead of recq, each updated online from the same logged events the learner reads.

- ``CoView``: item-to-item co-occurrence within a shopper's session (each click counts
  with the previous ``WINDOW`` clicks of the session, both ways), a candidate scored by
  its co-occurrence with the last three items of the history (newest weighted most),
  popularity breaking ties: the online form of ``recq evaluate``'s ``cooccurrence``.
- ``SupervisedControl``: a next-item model on the learner's architecture (GRU encoder,
  item table, next-item head) trained on the same organic transitions with a full
  softmax cross-entropy over the catalog (GRU4Rec style) and nothing else.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch.nn import functional as F

from learner.qnet import QNetwork
from learner.replay.storage import Batch

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


class SupervisedControl:
    def __init__(self, n_items: int, history_length: int, learning_rate: float) -> None:
        self.net = QNetwork(n_items=n_items, dim=64, history_length=history_length,
                            supervised_head=True)  # fmt: skip
        params = ["encoder", "event", "age", "position", "item", "next_item", "next_item_bias"]
        chosen = [p for name, p in self.net.named_parameters() if name.split(".")[0] in params]
        self.optimizer = torch.optim.AdamW(chosen, lr=learning_rate, weight_decay=1e-5)

    def update(self, batch: Batch) -> float:
        hidden, _, _ = self.net.encode(batch.items, batch.events, batch.ages)
        loss = F.cross_entropy(self.net.supervised_logits(hidden, None), batch.action)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def scores(self, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> np.ndarray:
        hidden, _, _ = self.net.encode(*state)
        out: np.ndarray = self.net.supervised_logits(hidden, None)[0].numpy()
        return out
