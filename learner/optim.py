"""Row-sparse AdamW for the per-item tables (embeddings and biases).

Only the rows a batch touched are read and written: their moments, their decay and
their step. Rows not in the batch keep their moments until they are next touched (the
"lazy Adam" of large-vocabulary models), so an update costs O(rows touched), not
O(catalog). Bias correction uses the optimizer's global step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class RowAdamW:
    def __init__(
        self,
        tables: dict[str, nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.tables = dict(tables)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.steps = 0
        self.exp_avg = {n: torch.zeros_like(p.data) for n, p in self.tables.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p.data) for n, p in self.tables.items()}

    @torch.no_grad()
    def step(self, index: torch.Tensor, grads: dict[str, torch.Tensor]) -> None:
        """Apply ``grads`` ([U, ...] per table) to rows ``index`` (unique)."""
        self.steps += 1
        beta1, beta2 = self.betas
        correction1 = 1 - beta1**self.steps
        correction2 = 1 - beta2**self.steps
        for name, grad in grads.items():
            table = self.tables[name].data
            m = self.exp_avg[name][index].mul_(beta1).add_(grad, alpha=1 - beta1)
            v = self.exp_avg_sq[name][index].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            self.exp_avg[name][index] = m
            self.exp_avg_sq[name][index] = v
            rows = table[index].mul_(1 - self.lr * self.weight_decay)
            denom = (v / correction2).sqrt_().add_(self.eps)
            rows.addcdiv_(m, denom, value=-self.lr / correction1)
            table[index] = rows

    def follow(self, name: str, table: nn.Parameter) -> None:
        """The table was reallocated (catalog growth): keep its rows' moments."""
        old = self.tables[name].shape[0]
        self.tables[name] = table
        for moments in (self.exp_avg, self.exp_avg_sq):
            pad = moments[name].new_zeros((table.shape[0] - old, *table.shape[1:]))
            moments[name] = torch.cat([moments[name], pad])

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        for name in self.tables:
            device = self.tables[name].device
            self.exp_avg[name] = state["exp_avg"][name].to(device)
            self.exp_avg_sq[name] = state["exp_avg_sq"][name].to(device)
