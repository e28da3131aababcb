"""Valid example records, one shopper journey per user: used by the demo, the tests and
docs/contract.md, and a starting point for producers writing their own."""

from __future__ import annotations

from schemas.records import CartEvent, ClickEvent, LineItem, PurchaseEvent, RecRequest


def example_journey(user_id: str, start_ms: int) -> list[ClickEvent | CartEvent | PurchaseEvent]:
    """View two items, cart one, buy it: four events one second apart."""
    t = start_ms
    return [
        ClickEvent(event_id=f"{user_id}-e1", user_id=user_id, ts_ms=t, item_id="sku-1001"),
        ClickEvent(event_id=f"{user_id}-e2", user_id=user_id, ts_ms=t + 1000, item_id="sku-2002"),
        CartEvent(
            event_id=f"{user_id}-e3",
            user_id=user_id,
            ts_ms=t + 2000,
            item_id="sku-2002",
            action="add",
            quantity=2,
            unit_price=19.99,
        ),
        PurchaseEvent(
            event_id=f"{user_id}-e4",
            user_id=user_id,
            ts_ms=t + 3000,
            order_id=f"{user_id}-o1",
            items=[LineItem(item_id="sku-2002", quantity=2, unit_price=19.99)],
        ),
    ]


def example_request(user_id: str, ts_ms: int) -> RecRequest:
    return RecRequest(request_id=f"{user_id}-r1", user_id=user_id, k=5, ts_ms=ts_ms)
