"""Which stored samples a batch is drawn from: uniformly, or in proportion to priority.

Proportional prioritized replay (Schaul et al. 2016): P(i) = p_i^alpha / sum_k p_k^alpha
with p_i = |TD error| + eps, importance weights w_i = (N * P(i))^-beta / max_batch w.
The sum tree is a flat tensor on the storage's device; updates and the stratified
descent are vectorized over the batch (one tensor op per tree level), so neither walks
the tree in Python per sample.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Sampler(Protocol):
    def on_write(self, slots: torch.Tensor) -> None: ...

    def sample(self, batch_size: int, size: int, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots and importance weights of a batch drawn from the first ``size`` slots."""
        ...

    def update(self, slots: torch.Tensor, td_error: torch.Tensor) -> None: ...


class UniformSampler:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def on_write(self, slots: torch.Tensor) -> None:
        pass

    def sample(self, batch_size: int, size: int, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        slots = torch.randint(size, (batch_size,), device=self.device)
        return slots, torch.ones(batch_size, device=self.device)

    def update(self, slots: torch.Tensor, td_error: torch.Tensor) -> None:
        pass


class SumTree:
    """Binary sum tree over ``capacity`` leaves (float64: sums of many small priorities)."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.leaves = 1 << max(0, (capacity - 1).bit_length())
        self.depth = self.leaves.bit_length() - 1
        self.tree = torch.zeros(2 * self.leaves, dtype=torch.float64, device=device)

    @property
    def total(self) -> float:
        return float(self.tree[1].item())

    def set(self, slots: torch.Tensor, values: torch.Tensor) -> None:
        node = slots + self.leaves
        tree = self.tree
        tree[node] = values.to(torch.float64)
        for _ in range(self.depth):
            # Duplicate parents recompute the same sum, so scattered writes are safe.
            node = torch.div(node, 2, rounding_mode="floor")
            tree[node] = tree[2 * node] + tree[2 * node + 1]

    def get(self, slots: torch.Tensor) -> torch.Tensor:
        return self.tree[slots + self.leaves]

    def find(self, mass: torch.Tensor) -> torch.Tensor:
        """Leaf whose prefix-sum interval contains each value of ``mass``."""
        node = torch.ones_like(mass, dtype=torch.int64)
        tree = self.tree
        for _ in range(self.depth):
            left = tree[2 * node]
            right = mass > left
            mass = torch.where(right, mass - left, mass)
            node = 2 * node + right.long()
        return node - self.leaves


class PrioritizedSampler:
    def __init__(
        self, capacity: int, device: torch.device, alpha: float = 0.6, eps: float = 1e-3
    ) -> None:
        self.alpha = alpha
        self.eps = eps
        self.device = device
        self.tree = SumTree(capacity, device)
        self.max_priority = 1.0  # new samples are drawn at least once before being ranked

    def on_write(self, slots: torch.Tensor) -> None:
        if slots.numel():
            self.tree.set(slots, torch.full(slots.shape, self.max_priority**self.alpha,
                                            dtype=torch.float64, device=self.device))  # fmt: skip

    def sample(self, batch_size: int, size: int, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        total = self.tree.total
        # Stratified: one draw in each of batch_size equal slices of the total mass.
        u = torch.rand(batch_size, dtype=torch.float64, device=self.device)
        mass = (torch.arange(batch_size, device=self.device) + u) * (total / batch_size)
        slots = self.tree.find(mass).clamp_(max=size - 1)
        prob = self.tree.get(slots) / total
        weight = (size * prob).clamp_(min=1e-12).pow(-beta)
        return slots, (weight / weight.max()).to(torch.float32)

    def update(self, slots: torch.Tensor, td_error: torch.Tensor) -> None:
        if slots.numel() == 0:
            return
        priority = td_error.detach().abs().to(torch.float64) + self.eps
        self.max_priority = max(self.max_priority, float(priority.max().item()))
        self.tree.set(slots, priority.pow(self.alpha))
