"""The benches' synthetic shop traffic: clicks, cart adds and one-line purchases of
random shoppers and items, as (event type, key, value) messages. No sys.path changes
here: bench/assembler.py imports it against another checkout (RECQ_BENCH_ROOT)."""

from __future__ import annotations

import random
import time

from schemas.codec import encode
from schemas.records import CartEvent, ClickEvent, LineItem, PurchaseEvent


def make_events(
    n: int, users: int, items: int, seed: int = 1
) -> tuple[list[tuple[str, bytes, bytes]], int]:
    """(event type, key, value) and the number of interactions (transitions to expect)."""
    rng = random.Random(seed)
    now = int(time.time() * 1000) - 3_600_000
    out, lines = [], 0
    for i in range(n):
        user = f"u{rng.randrange(users)}"
        ts = now + i * 10
        item = f"sku-{rng.randrange(items)}"
        roll = rng.random()
        event: ClickEvent | CartEvent | PurchaseEvent
        if roll < 0.75:
            event = ClickEvent(event_id=f"e{i}", user_id=user, ts_ms=ts, item_id=item)
        elif roll < 0.95:
            event = CartEvent(event_id=f"e{i}", user_id=user, ts_ms=ts, item_id=item, action="add")
        else:
            event = PurchaseEvent(
                event_id=f"e{i}", user_id=user, ts_ms=ts, order_id=f"o{i}",
                items=[LineItem(item_id=item, quantity=1, unit_price=5.0)],
            )  # fmt: skip
        lines += len(event.items) if isinstance(event, PurchaseEvent) else 1
        out.append((event.type, user.encode(), encode(event)))
    return out, lines
