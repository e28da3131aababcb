"""Serving's shopper state beyond the shared state check (tests/schemas/
test_state_builders.py): the filters follow event time, repeats count once, and the
kept history follows the serving snapshot's L."""

from __future__ import annotations

from inference.state import ShopperStates
from schemas.records import CartEvent, ClickEvent, LineItem, PurchaseEvent

T0 = 1_795_000_000_000


def cart(eid: str, at_s: int, action: str) -> CartEvent:
    return CartEvent(event_id=eid, user_id="u", ts_ms=T0 + at_s * 1000, item_id="sku-1",
                     action=action)  # type: ignore[arg-type]  # fmt: skip


def test_the_cart_follows_event_time_not_arrival() -> None:
    states = ShopperStates()
    states.apply(cart("remove", 5, "remove"))
    states.apply(cart("add", 1, "add"))  # arrives late: it was added, then removed
    shopper = states.get("u")
    assert shopper is not None and shopper.cart == set()
    states.apply(cart("again", 9, "add"))
    assert shopper.cart == {"sku-1"}
    line = LineItem(item_id="sku-1", quantity=1, unit_price=1.0)
    states.apply(PurchaseEvent(event_id="buy", user_id="u", ts_ms=T0 + 10_000, order_id="o",
                               items=[line]))  # fmt: skip
    assert shopper.cart == set() and shopper.purchased == {"sku-1"}


def test_a_repeat_is_applied_once_and_reported() -> None:
    states = ShopperStates()
    click = ClickEvent(event_id="c", user_id="u", ts_ms=T0, item_id="sku-2")
    assert states.apply(click) and not states.apply(click)
    shopper = states.get("u")
    assert shopper is not None and len(shopper.history) == 1


def test_kept_history_grows_to_the_snapshots_length() -> None:
    states = ShopperStates(history_length=3)
    for n in range(6):
        states.apply(ClickEvent(event_id=f"c{n}", user_id="u", ts_ms=T0 + n, item_id=f"i{n}"))
    shopper = states.get("u")
    assert shopper is not None and [h[0] for h in shopper.history] == ["i3", "i4", "i5"]
    states.keep_at_least(5)
    states.apply(ClickEvent(event_id="c6", user_id="u", ts_ms=T0 + 6, item_id="i6"))
    assert [h[0] for h in shopper.history] == ["i3", "i4", "i5", "i6"]


def test_dropping_partitions_forgets_only_their_shoppers() -> None:
    states = ShopperStates()
    for user, partition in (("a", 0), ("b", 1), ("c", 2), ("d", 1)):
        click = ClickEvent(event_id=f"{user}-1", user_id=user, ts_ms=T0, item_id="sku-1")
        states.apply(click, partition)
    assert states.drop_partitions({1, 5}) == 2
    assert states.get("b") is None and states.get("d") is None
    assert states.get("a") is not None and states.get("c") is not None
    # A shopper keeps the partition of its first event (all of its events share one).
    states.apply(ClickEvent(event_id="a-2", user_id="a", ts_ms=T0 + 1, item_id="sku-2"), 0)
    assert states.drop_partitions({0}) == 1 and len(states) == 1
