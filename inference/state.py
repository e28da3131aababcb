"""What serving knows about each shopper, maintained by the serving members themselves
from the event topics (co-partitioned with rec-requests, so the member answering a
user's requests also reads that user's events; a range assignment keeps partition p of
every topic on one member). A request is answered after the events polled with it, so
the state reflects the user's newest events that reached the broker first.

Per user: the last L interactions (item index, event code, time), items bought and the
cart (filters). Items are indexed by the read-only item vocabulary; an event for an item
the vocabulary does not know yet is kept by id and indexed once it is."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from schemas.records import CartEvent, ClickEvent, PurchaseEvent
from streams.session import EVENT_CODES, age_bucket


@dataclass
class Shopper:
    history: deque[tuple[str, int, int]]  # (item id, event code, ts_ms), oldest first
    purchased: set[str] = field(default_factory=set)
    cart: set[str] = field(default_factory=set)


class ShopperStates:
    def __init__(self, history_length: int, max_users: int = 1_000_000) -> None:
        self.history_length = history_length
        self.max_users = max_users
        self._users: OrderedDict[str, Shopper] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

    def get(self, user_id: str) -> Shopper | None:
        return self._users.get(user_id)

    def apply(self, event: ClickEvent | CartEvent | PurchaseEvent) -> None:
        shopper = self._users.pop(event.user_id, None) or Shopper(deque(maxlen=self.history_length))
        self._users[event.user_id] = shopper  # most recently active last
        if len(self._users) > self.max_users:
            self._users.popitem(last=False)
        if isinstance(event, PurchaseEvent):
            for line in event.items:
                shopper.history.append((line.item_id, EVENT_CODES["purchase"], event.ts_ms))
                shopper.purchased.add(line.item_id)
                shopper.cart.discard(line.item_id)
        elif isinstance(event, CartEvent):
            if event.action == "add":
                shopper.history.append((event.item_id, EVENT_CODES["cart"], event.ts_ms))
                shopper.cart.add(event.item_id)
            else:
                shopper.cart.discard(event.item_id)
        else:
            shopper.history.append((event.item_id, EVENT_CODES["click"], event.ts_ms))

    def arrays(
        self, user_id: str, now_ms: int, index_of: dict[str, int], length: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Left-padded (items, events, ages) rows for the model; unknown items skipped."""
        items = np.zeros(length, np.int64)
        events = np.zeros(length, np.int64)
        ages = np.zeros(length, np.int64)
        shopper = self._users.get(user_id)
        if shopper is not None:
            known = [(index_of[i], c, t) for i, c, t in shopper.history if i in index_of]
            known = known[-length:]
            start = length - len(known)
            for j, (index, code, ts) in enumerate(known):
                items[start + j], events[start + j] = index, code
                ages[start + j] = age_bucket(now_ms - ts)
        return items, events, ages
