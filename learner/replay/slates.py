"""The slate store: shown slates and their per-slot outcome, as preallocated tensors.

Slate transitions (``schemas.records.SlateTransition``) are one-step samples: the state
when shown, the slots (item, shown, response, reward), the state just after the first
response and whether the session ended there. They feed the choice model (every shown
slate, answered or not) and the slate TD term of ``learner.dqn`` (answered slots).
Sampling is uniform; the oldest slate is overwritten first. Slots past ``SLATE_SLOTS``
are dropped (position bias makes them the least informative).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from schemas.records import SlateTransition

SLATE_SLOTS = 20


@dataclass(frozen=True, slots=True)
class SlateBatch:
    items: torch.Tensor  # [B, L] state when shown (left-padded)
    events: torch.Tensor
    ages: torch.Tensor
    slate: torch.Tensor  # [B, S] item indices (0 where no slot)
    shown: torch.Tensor  # [B, S] bool: the slot exists and was rendered
    responses: torch.Tensor  # [B, S] int64: 0 none, 1 click, 2 cart, 3 purchase
    rewards: torch.Tensor  # [B, S] float32
    next_items: torch.Tensor  # [B, L] state after the first response (zeros if none)
    next_events: torch.Tensor
    next_ages: torch.Tensor
    bootstrap: torch.Tensor  # [B] float32: 1 if a response was followed by more session

    def __len__(self) -> int:
        return int(self.slate.shape[0])


class SlateStore:
    def __init__(self, capacity: int, history_length: int, device: torch.device) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity, self.history_length, self.device = capacity, history_length, device
        seq, slots = (capacity, history_length), (capacity, SLATE_SLOTS)
        self._t = {
            "items": torch.zeros(seq, dtype=torch.int32, device=device),
            "events": torch.zeros(seq, dtype=torch.uint8, device=device),
            "ages": torch.zeros(seq, dtype=torch.uint8, device=device),
            "slate": torch.zeros(slots, dtype=torch.int32, device=device),
            "shown": torch.zeros(slots, dtype=torch.bool, device=device),
            "responses": torch.zeros(slots, dtype=torch.uint8, device=device),
            "rewards": torch.zeros(slots, dtype=torch.float32, device=device),
            "next_items": torch.zeros(seq, dtype=torch.int32, device=device),
            "next_events": torch.zeros(seq, dtype=torch.uint8, device=device),
            "next_ages": torch.zeros(seq, dtype=torch.uint8, device=device),
            "bootstrap": torch.zeros(capacity, dtype=torch.float32, device=device),
        }
        self._cursor = 0
        self._size = 0
        self.written = 0
        #: Shown slots per item index, over every slate ever added (not only those held).
        self._impressions = np.zeros(0, dtype=np.float64)
        self.max_item = -1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def add(self, transitions: Iterable[SlateTransition]) -> int:
        """Write a block of slates: host arrays first, then one copy per field (as the
        replay storage does), not a tensor per slate and field."""
        given = list(transitions)
        block = given[-self.capacity :]  # only the newest capacity slates can survive
        n = len(block)
        if n == 0:
            return 0
        length = self.history_length
        host = {name: np.zeros((n, *t.shape[1:]), dtype=_NUMPY[t.dtype])
                for name, t in self._t.items()}  # fmt: skip
        for i, t in enumerate(block):
            k = min(len(t.items), SLATE_SLOTS)
            for prefix, seq in (("", t.state), ("next_", t.next_state)):
                if seq is not None and seq.items:
                    m = min(length, len(seq.items))
                    host[prefix + "items"][i, length - m :] = seq.items[-m:]
                    host[prefix + "events"][i, length - m :] = seq.events[-m:]
                    host[prefix + "ages"][i, length - m :] = np.minimum(seq.ages[-m:], 255)
            host["slate"][i, :k] = t.items[:k]
            host["shown"][i, :k] = t.shown[:k]
            host["responses"][i, :k] = t.responses[:k]
            host["rewards"][i, :k] = t.rewards[:k]
            host["bootstrap"][i] = float(t.next_state is not None and not t.done)
            self.max_item = max(self.max_item, max(t.items), max(t.state.items, default=-1))
        shown_items = host["slate"][host["shown"]]
        if shown_items.size:
            if self._impressions.shape[0] <= int(shown_items.max()):
                grown = np.zeros(int(shown_items.max()) + 1)
                grown[: self._impressions.shape[0]] = self._impressions
                self._impressions = grown
            np.add.at(self._impressions, shown_items, 1.0)
        with self._lock:
            slots = (self._cursor + torch.arange(n)) % self.capacity
            slots = slots.to(self.device)
            for name, dst in self._t.items():
                dst.index_copy_(0, slots, torch.from_numpy(host[name]).to(self.device))
            self._cursor = (self._cursor + n) % self.capacity
            self._size = min(self.capacity, self._size + n)
            self.written += len(given)
        return len(given)

    def impressions(self) -> torch.Tensor:
        """Shown slots per item index (float32; items past the end have none)."""
        return torch.from_numpy(self._impressions.astype(np.float32))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> SlateBatch:
        with self._lock:
            if self._size == 0:
                raise ValueError("sample() on an empty slate store")
            index = torch.randint(self._size, (batch_size,), generator=generator).to(self.device)
            t = {name: v.index_select(0, index) for name, v in self._t.items()}
        long = ("items", "events", "ages", "slate", "responses", "next_items", "next_events",
                "next_ages")  # fmt: skip
        return SlateBatch(**{n: (v.long() if n in long else v) for n, v in t.items()})


_NUMPY = {torch.int32: np.int32, torch.uint8: np.uint8, torch.bool: np.bool_,
          torch.float32: np.float32}  # fmt: skip
