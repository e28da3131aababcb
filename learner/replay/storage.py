"""Bounded ring storage of n-step samples as preallocated tensors on one device.

A sample is (state, action, n-step return, next state, discount) where ``discount`` is
gamma**k for a k-step bootstrap and 0 when the episode ended inside the k steps, so the
target is always ``ret + discount * Q_target(next_state, a*)``. States are left-padded to
L interactions (event code 0 marks padding, the newest interaction is last).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, slots=True)
class Batch:
    """Tensors of a batch of samples (on the storage's device)."""

    items: torch.Tensor  # [B, L] int64
    events: torch.Tensor  # [B, L] int64
    ages: torch.Tensor  # [B, L] int64
    action: torch.Tensor  # [B] int64
    ret: torch.Tensor  # [B] float32
    next_items: torch.Tensor
    next_events: torch.Tensor
    next_ages: torch.Tensor
    discount: torch.Tensor  # [B] float32
    weight: torch.Tensor  # [B] float32, importance weights (1 for uniform sampling)
    index: torch.Tensor  # [B] int64, slots in the storage (for priority updates)
    stamp: torch.Tensor  # [B] int64, which write filled each slot (see TensorStorage)

    def __len__(self) -> int:
        return int(self.action.shape[0])


@dataclass(slots=True)
class Samples:
    """A host-side (numpy) block of samples on their way into the storage."""

    items: np.ndarray  # [N, L] int64
    events: np.ndarray  # [N, L] uint8
    ages: np.ndarray  # [N, L] uint8
    action: np.ndarray  # [N] int64
    ret: np.ndarray  # [N] float32
    next_items: np.ndarray
    next_events: np.ndarray
    next_ages: np.ndarray
    discount: np.ndarray  # [N] float32

    def __len__(self) -> int:
        return int(self.action.shape[0])


_FIELDS = (
    "items", "events", "ages", "action", "ret", "next_items", "next_events", "next_ages",
    "discount",
)  # fmt: skip


class TensorStorage:
    """``capacity`` slots written round-robin; the oldest sample is overwritten first."""

    def __init__(self, capacity: int, history_length: int, device: torch.device) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.history_length = history_length
        self.device = device
        seq = (capacity, history_length)
        self._t: dict[str, torch.Tensor] = {
            "items": torch.zeros(seq, dtype=torch.int32, device=device),
            "events": torch.zeros(seq, dtype=torch.uint8, device=device),
            "ages": torch.zeros(seq, dtype=torch.uint8, device=device),
            "action": torch.zeros(capacity, dtype=torch.int64, device=device),
            "ret": torch.zeros(capacity, dtype=torch.float32, device=device),
            "next_items": torch.zeros(seq, dtype=torch.int32, device=device),
            "next_events": torch.zeros(seq, dtype=torch.uint8, device=device),
            "next_ages": torch.zeros(seq, dtype=torch.uint8, device=device),
            "discount": torch.zeros(capacity, dtype=torch.float32, device=device),
        }
        # Ordinal of the write that filled each slot: lets a priority update computed for a
        # sample that was overwritten meanwhile be recognised and dropped.
        self.stamp = torch.full((capacity,), -1, dtype=torch.int64, device=device)
        self._cursor = 0
        self._size = 0
        self.written = 0  # samples ever written (monotonic)
        self.max_item = -1  # largest item index ever written (the catalog must cover it)

    def __len__(self) -> int:
        return self._size

    def extend(self, samples: Samples) -> torch.Tensor:
        """Write a block; returns the slots it went to (int64, on the device)."""
        n = len(samples)
        if n == 0:
            return torch.empty(0, dtype=torch.int64, device=self.device)
        if n > self.capacity:  # only the newest capacity samples can survive anyway
            keep = slice(n - self.capacity, n)
            samples = Samples(**{f: getattr(samples, f)[keep] for f in _FIELDS})
            n = self.capacity
        self.max_item = max(
            self.max_item,
            int(samples.action.max()),
            int(samples.items.max()),
            int(samples.next_items.max()),
        )
        slots = (self._cursor + torch.arange(n, dtype=torch.int64)) % self.capacity
        slots = slots.to(self.device)
        for name in _FIELDS:
            dst = self._t[name]
            src = torch.from_numpy(np.ascontiguousarray(getattr(samples, name)))
            dst.index_copy_(0, slots, src.to(device=self.device, dtype=dst.dtype))
        self.stamp.index_copy_(
            0, slots, self.written + torch.arange(n, dtype=torch.int64, device=self.device)
        )
        self._cursor = (self._cursor + n) % self.capacity
        self._size = min(self.capacity, self._size + n)
        self.written += n
        return slots

    def gather(self, index: torch.Tensor, weight: torch.Tensor) -> Batch:
        t = self._t

        def seq(name: str) -> torch.Tensor:
            return t[name].index_select(0, index).long()

        return Batch(
            items=seq("items"),
            events=seq("events"),
            ages=seq("ages"),
            action=t["action"].index_select(0, index),
            ret=t["ret"].index_select(0, index),
            next_items=seq("next_items"),
            next_events=seq("next_events"),
            next_ages=seq("next_ages"),
            discount=t["discount"].index_select(0, index),
            weight=weight,
            index=index,
            stamp=self.stamp.index_select(0, index),
        )
