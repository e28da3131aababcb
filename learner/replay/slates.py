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

import torch

from schemas.records import InteractionSequence, SlateTransition

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
        self.max_item = -1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def add(self, transitions: Iterable[SlateTransition]) -> int:
        rows = [self._row(t) for t in transitions]
        if not rows:
            return 0
        with self._lock:
            for row in rows:
                slot = self._cursor
                for name, value in row.items():
                    self._t[name][slot] = value
                self._cursor = (self._cursor + 1) % self.capacity
                self._size = min(self.capacity, self._size + 1)
                self.written += 1
        return len(rows)

    def _row(self, t: SlateTransition) -> dict[str, torch.Tensor]:
        n = min(len(t.items), SLATE_SLOTS)
        row: dict[str, torch.Tensor] = {}
        for prefix, seq in (("", t.state), ("next_", t.next_state)):
            items, events, ages = _left_padded(seq, self.history_length)
            row[prefix + "items"], row[prefix + "events"], row[prefix + "ages"] = (
                items,
                events,
                ages,
            )

        def slots(values: list[float] | list[int] | list[bool], dtype: torch.dtype) -> torch.Tensor:
            out = torch.zeros(SLATE_SLOTS, dtype=dtype)
            out[:n] = torch.tensor(values[:n], dtype=dtype)
            return out

        row["slate"] = slots(t.items, torch.int32)
        row["shown"] = slots(t.shown, torch.bool)
        row["responses"] = slots(t.responses, torch.uint8)
        row["rewards"] = slots(t.rewards, torch.float32)
        row["bootstrap"] = torch.tensor(float(t.next_state is not None and not t.done))
        self.max_item = max(self.max_item, max(t.items), max(t.state.items, default=-1))
        return row

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> SlateBatch:
        with self._lock:
            if self._size == 0:
                raise ValueError("sample() on an empty slate store")
            index = torch.randint(self._size, (batch_size,), generator=generator).to(self.device)
            t = {name: v.index_select(0, index) for name, v in self._t.items()}
        long = ("items", "events", "ages", "slate", "responses", "next_items", "next_events",
                "next_ages")  # fmt: skip
        return SlateBatch(**{n: (v.long() if n in long else v) for n, v in t.items()})


def _left_padded(
    seq: InteractionSequence | None, length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = torch.zeros(length, dtype=torch.int32)
    events = torch.zeros(length, dtype=torch.uint8)
    ages = torch.zeros(length, dtype=torch.uint8)
    if seq is not None:
        k = min(length, len(seq.items))
        if k:
            items[length - k :] = torch.tensor(seq.items[-k:], dtype=torch.int32)
            events[length - k :] = torch.tensor(seq.events[-k:], dtype=torch.uint8)
            ages[length - k :] = torch.tensor(
                [min(a, 255) for a in seq.ages[-k:]], dtype=torch.uint8
            )
    return items, events, ages
