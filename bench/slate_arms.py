"""The supervised control of the offline closed loop (bench/slate_loop.py; the co-view
control is ``simulator.controls.CoView``): a next-item model on the learner's
architecture (GRU encoder, item table, next-item head) trained on the same organic
transitions with a full softmax cross-entropy over the catalog (GRU4Rec style) and
nothing else."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from learner.qnet import QNetwork
from learner.replay.storage import Batch


class SupervisedControl:
    def __init__(self, n_items: int, history_length: int, learning_rate: float) -> None:
        self.net = QNetwork(n_items=n_items, dim=64, history_length=history_length,
                            supervised_head=True)  # fmt: skip
        params = ["encoder", "event", "age", "position", "item", "next_item", "next_item_bias",
                  "category", "price_vector"]  # fmt: skip
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
