"""The state encoding, in one place: how events become interactions, how interactions
are ordered, and how a shopper's last L interactions become the model's input.

Torch-free, used by every state builder: the streams worker (training states), the
serving members (request states), offline evaluation, and the learner (the size of its
event and age embeddings). ``tests/schemas/test_state_builders.py`` feeds one event log
to each of them and compares every state with one written by hand from these rules.

Rules (docs/streams.md, "State and reward", says the same):

* Interactions. A click is one interaction with code ``click``; a cart ``add`` one with
  code ``cart``; a cart ``remove`` one with code ``cart_remove`` (the shopper touched the
  item and took it back: a negative signal, kept in the state and rewarded by
  ``RECQ_REWARD_CART_REMOVE``); a purchase one ``purchase`` interaction per line item,
  in line order.
* Order. A shopper's interactions are ordered by (event time, event_id, line); an event
  whose event_id was among the shopper's last ``RECENT_EVENT_IDS`` events is a repeat and
  is ignored.
* State. The last L interactions in that order, oldest first: item index, event code,
  and age bucket of (decision time - event time): 1..7 for < 10 s, < 1 min, < 5 min,
  < 30 min, < 2 h, < 1 d, older. 0 is padding for codes and buckets alike; rows given to
  the model are left-padded to L.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

#: Bumped whenever any rule above changes meaning; a snapshot records the version it
#: was trained with and serving refuses one it does not understand.
#: 1: codes 1..3, cart removals dropped. 2: cart_remove = 4, states in (ts, event_id,
#: line) order including late events.
FEATURE_VERSION = 2

EVENT_CODES: dict[str, int] = {"click": 1, "cart": 2, "purchase": 3, "cart_remove": 4}
EVENT_NAMES: dict[int, str] = {code: name for name, code in EVENT_CODES.items()}
#: Rows of the learner's event embedding (padding included).
N_EVENT_CODES = 1 + len(EVENT_CODES)

#: Upper bounds (ms) of age buckets 1..6; older is bucket 7; 0 is left for padding.
AGE_BUCKET_BOUNDS_MS = (10_000, 60_000, 300_000, 1_800_000, 7_200_000, 86_400_000)
#: Rows of the learner's age embedding: buckets 0..7 and headroom for finer buckets.
N_AGE_BUCKETS = 16

#: L when no setting says otherwise (``RECQ_HISTORY_LENGTH``).
DEFAULT_HISTORY_LENGTH = 10

#: Repeats are looked for among this many of the shopper's latest events, kept as 64-bit
#: digests (a false match needs a 2**-64 collision) so per-user state stays small.
RECENT_EVENT_IDS = 64


def age_bucket(age_ms: int) -> int:
    """1 for an age under 10 s, ..., 6 under 1 d, 7 older (bounds exclusive)."""
    return 1 + bisect_right(AGE_BUCKET_BOUNDS_MS, max(age_ms, 0))


#: Item features (the catalog topic): categories hash into this many buckets (0 = none
#: known); prices enter as log(1 + price) / LOG_PRICE_SCALE (0 = none known).
CATEGORY_BUCKETS = 1024
LOG_PRICE_SCALE = 5.0


def category_bucket(category: str | None) -> int:
    """The bucket of an item category, 1..CATEGORY_BUCKETS - 1 (0 when there is none):
    stable across processes and versions (a digest, not Python's salted hash)."""
    if not category:
        return 0
    digest = int.from_bytes(blake2b(category.encode(), digest_size=8).digest(), "big")
    return 1 + digest % (CATEGORY_BUCKETS - 1)


def price_feature(price: float | None) -> float:
    """The price feature of an item: log(1 + price) / LOG_PRICE_SCALE, 0 when unknown."""
    return math.log1p(max(price, 0.0)) / LOG_PRICE_SCALE if price is not None else 0.0


def event_digest(event_id: str) -> int:
    return int.from_bytes(blake2b(event_id.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class EventInteraction:
    """One item touched by one event, before the item has an index."""

    item_id: str
    code: int
    line: int
    last_line: bool
    revenue: float = 0.0  # a purchase line's unit price x quantity (the revenue objective)


def interactions_of(event: Any) -> list[EventInteraction]:
    """The interactions an event (click, cart or purchase record) stands for."""
    kind = event.type
    if kind == "purchase":
        last = len(event.items) - 1
        return [
            EventInteraction(
                line.item_id, EVENT_CODES["purchase"], n, n == last, line.unit_price * line.quantity
            )
            for n, line in enumerate(event.items)
        ]
    if kind == "cart":
        code = EVENT_CODES["cart" if event.action == "add" else "cart_remove"]
        return [EventInteraction(event.item_id, code, 0, True)]
    if kind == "click":
        return [EventInteraction(event.item_id, EVENT_CODES["click"], 0, True)]
    raise ValueError(f"not a shop event: {kind!r}")


#: A history entry: [item, code, ts_ms, event_id, line]. Lists, not tuples, because the
#: streams worker stores histories as JSON; the last two fields only order ties.
HistoryEntry = list[Any]


def order_key(entry: HistoryEntry) -> tuple[int, str, int]:
    return (entry[2], entry[3], entry[4])


def insert(history: list[HistoryEntry], entry: HistoryEntry, length: int) -> None:
    """Put ``entry`` in its (ts, event_id, line) place in ``history`` and keep the last
    ``length`` (in place: encode the state before it first)."""
    insort(history, entry, key=order_key)
    del history[:-length]


def encode_state(history: list[HistoryEntry], now_ms: int) -> dict[str, list[int]]:
    """The state at ``now_ms`` (the Transition wire shape): parallel lists, oldest first."""
    bounds = AGE_BUCKET_BOUNDS_MS
    # age_bucket inlined: twice per interaction in the streams worker, it was 7% of its
    # profile as a call per history entry.
    return {
        "items": [h[0] for h in history],
        "events": [h[1] for h in history],
        "ages": [1 + bisect_right(bounds, now_ms - h[2]) if now_ms > h[2] else 1 for h in history],
    }


def is_repeat(recent: list[int], event_id: str) -> bool:
    """The repeat rule: True if ``event_id`` is among the shopper's latest event ids
    (``recent``: digests, a plain list the streams Table can store); else records it."""
    digest = event_digest(event_id)
    if digest in recent:
        return True
    recent.append(digest)
    del recent[:-RECENT_EVENT_IDS]
    return False
