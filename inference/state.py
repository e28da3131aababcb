"""What serving knows about each shopper, maintained by the serving members themselves
from the event topics (co-partitioned with rec-requests, so the member answering a
user's requests also reads that user's events; a range assignment keeps partition p of
every topic on one member). A request is answered after the events polled with it, so
the state reflects the user's newest events that reached the broker first.

Per user: the last interactions, built by the rules of ``schemas.features`` exactly as
the streams worker builds training states (event-time order, repeats ignored, cart
removals kept with their own code), items bought and the cart (filters). Items are kept
by id and indexed with the serving snapshot's vocabulary when a state is encoded, so an
item the snapshot does not know yet is left out of the state until one does."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from schemas import features
from schemas.features import EVENT_CODES, HistoryEntry, is_repeat
from schemas.records import CartEvent, ClickEvent, PurchaseEvent

ShopEvent = ClickEvent | CartEvent | PurchaseEvent


@dataclass
class Shopper:
    history: list[HistoryEntry] = field(default_factory=list)  # [item id, code, ts, event id, line]
    recent_ids: list[int] = field(default_factory=list)
    purchased: set[str] = field(default_factory=set)
    #: item id -> (order key of the latest add / remove / purchase, in the cart after it)
    cart_log: dict[str, tuple[tuple[int, str], bool]] = field(default_factory=dict)
    #: The partition (of every event topic: they are co-partitioned) the shopper's events
    #: arrive on; a member that loses it drops the shopper.
    partition: int = -1

    @property
    def cart(self) -> set[str]:
        return {item for item, (_, inside) in self.cart_log.items() if inside}

    def note(self, item_id: str, code: int, key: tuple[int, str]) -> None:
        """What one interaction (at order key ``key``) does to the filters: a purchase
        marks the item bought; adds, removals and purchases move it in or out of the cart.
        The one rule serving's filters follow (``recq evaluate``'s served row too)."""
        if code == EVENT_CODES["purchase"]:
            self.purchased.add(item_id)
        if code != EVENT_CODES["click"]:
            # The cart follows event time too: a late add does not undo a removal.
            seen = self.cart_log.get(item_id)
            if seen is None or seen[0] <= key:
                self.cart_log[item_id] = (key, code == EVENT_CODES["cart"])


class ShopperStates:
    def __init__(
        self, history_length: int = features.DEFAULT_HISTORY_LENGTH, max_users: int = 1_000_000
    ) -> None:
        #: Interactions kept per shopper; grows to the longest history a served model reads.
        self.history_length = history_length
        self.max_users = max_users
        self._users: OrderedDict[str, Shopper] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

    def get(self, user_id: str) -> Shopper | None:
        return self._users.get(user_id)

    def keep_at_least(self, history_length: int) -> None:
        self.history_length = max(self.history_length, history_length)

    def apply(self, event: ShopEvent, partition: int = -1) -> bool:
        """Apply one event (read from ``partition``); False when it is a repeat (ignored)."""
        shopper = self._users.pop(event.user_id, None) or Shopper(partition=partition)
        self._users[event.user_id] = shopper  # most recently active last
        if len(self._users) > self.max_users:
            self._users.popitem(last=False)
        if is_repeat(shopper.recent_ids, event.event_id):
            return False
        key = (event.ts_ms, event.event_id)
        for x in features.interactions_of(event):
            entry = [x.item_id, x.code, event.ts_ms, event.event_id, x.line]
            features.insert(shopper.history, entry, self.history_length)
            shopper.note(x.item_id, x.code, key)
        return True

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget the shoppers of partitions this member no longer holds (their new owner
        rebuilds them); returns how many were dropped."""
        if not partitions:
            return 0
        gone = [user for user, s in self._users.items() if s.partition in partitions]
        for user in gone:
            del self._users[user]
        return len(gone)

    def arrays(
        self, user_id: str, now_ms: int, index_of: dict[str, int], length: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Left-padded (items, events, ages) rows for the model; unknown items left out."""
        items = np.zeros(length, np.int64)
        events = np.zeros(length, np.int64)
        ages = np.zeros(length, np.int64)
        shopper = self._users.get(user_id)
        if shopper is not None:
            known = [h for h in shopper.history if h[0] in index_of][-length:]
            if known:
                state = features.encode_state(known, now_ms)
                start = length - len(known)
                items[start:] = [index_of[h[0]] for h in known]
                events[start:] = state["events"]
                ages[start:] = state["ages"]
        return items, events, ages
