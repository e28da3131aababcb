"""The simulator: reproducible from a seed, shoppers respond to what they are shown,
and the oracle (true tastes) beats random by a wide margin."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.codec import encode
from schemas.records import CartEvent, ClickEvent, PurchaseEvent
from simulator.session import ShoppingSession, oracle, random_policy, run_session
from simulator.shop import Catalog, shoppers, utility

START = 1_795_000_000_000


def run(seed: int, policy: str, n: int = 150) -> list:  # type: ignore[type-arg]
    catalog = Catalog.generate(n_items=500, n_categories=10, seed=seed)
    rng = np.random.default_rng(seed)
    recommend = {"oracle": oracle(catalog), "random": random_policy(catalog, rng), "none": None}[
        policy
    ]
    return [run_session(catalog, s, rng, recommend, START) for s in shoppers(catalog, n, seed)]


def test_same_seed_same_events_other_seed_other_events() -> None:
    a, b, c = run(3, "oracle", 40), run(3, "oracle", 40), run(4, "oracle", 40)
    wire = [[encode(e) for e in o.events] for o in a]
    assert wire == [[encode(e) for e in o.events] for o in b]
    assert wire != [[encode(e) for e in o.events] for o in c]
    catalog = Catalog.generate(200, 5, seed=9)
    assert np.array_equal(catalog.price, Catalog.generate(200, 5, seed=9).price)


def test_oracle_beats_random_and_shoppers_respond_to_slates() -> None:
    by = {p: run(7, p) for p in ("oracle", "random", "none")}
    reward = {p: np.mean([o.reward for o in outs]) for p, outs in by.items()}
    ctr = {p: sum(o.clicked_shown for o in outs) / max(1, sum(o.shown for o in outs))
           for p, outs in by.items() if p != "none"}  # fmt: skip
    assert reward["oracle"] > 2 * reward["random"] > 0
    assert ctr["oracle"] > 2 * ctr["random"]
    assert all(o.shown == 0 and o.clicked_shown == 0 for o in by["none"])


def test_events_follow_the_contract_and_attribution() -> None:
    outs = run(11, "oracle", 60)
    events = [e for o in outs for e in o.events]
    assert {type(e) for e in events} == {ClickEvent, CartEvent, PurchaseEvent}
    attributed = [e for e in events if e.rec_id is not None]
    assert attributed and all(e.position is not None and 0 <= e.position < 10 for e in attributed)
    for o in outs:
        ts = [e.ts_ms for e in o.events]
        assert ts == sorted(ts) and len({e.event_id for e in o.events}) == len(o.events)
        purchases = [i for i, e in enumerate(o.events) if isinstance(e, PurchaseEvent)]
        assert purchases in ([], [len(o.events) - 1])  # a purchase ends the session
        expected = sum(0.2 if isinstance(e, ClickEvent) else 0.5 if isinstance(e, CartEvent)
                       else len(e.items) for e in o.events)  # fmt: skip
        assert o.reward == pytest.approx(expected, abs=1e-9)


def test_objectives_count_what_the_events_say_and_revenue_is_weighted() -> None:
    from schemas.reward import Reward

    catalog = Catalog.generate(n_items=500, n_categories=10, seed=5)
    rng = np.random.default_rng(5)
    weights = Reward(revenue=0.01)
    outs = [run_session(catalog, s, rng, oracle(catalog, reward=weights), START, reward=weights)
            for s in shoppers(catalog, 80, 5)]  # fmt: skip
    for o in outs:
        orders = [e for e in o.events if isinstance(e, PurchaseEvent)]
        revenue = sum(line.unit_price * line.quantity for e in orders for line in e.items)
        assert o.objectives() == {
            "clicks": sum(isinstance(e, ClickEvent) for e in o.events),
            "carts": sum(isinstance(e, CartEvent) and e.action == "add" for e in o.events),
            "purchases": len(orders),
            "revenue": pytest.approx(revenue),
        }
        lines = sum(len(e.items) for e in orders)
        base = 0.2 * o.objectives()["clicks"] + 0.5 * o.objectives()["carts"] + lines
        assert o.reward == pytest.approx(base + 0.01 * revenue)
    assert sum(o.revenue for o in outs) > 0


def test_the_oracle_does_not_show_what_the_shopper_cannot_cart_first() -> None:
    from simulator.session import oracle_slate

    catalog = Catalog.generate(n_items=300, n_categories=5, seed=2)
    shopper = shoppers(catalog, 1, 2)[0]
    best = oracle_slate(catalog, shopper, 10)
    owned = set(best[:5])
    again = oracle_slate(catalog, shopper, 10, owned=owned)
    # Owned items lose their cart value: they fall behind items still worth carting.
    assert again[:5] != best[:5] and set(again[:5]).isdisjoint(owned)


def test_a_misleading_shop_gives_that_share_of_items_another_categorys_organic_appeal() -> None:
    plain = Catalog.generate(200, 10, seed=5)
    assert np.array_equal(plain.organic_factors, plain.factors)
    shop = Catalog.generate(200, 10, seed=5, misleading=0.5)
    # The same shop otherwise: factors, prices and categories do not depend on the share.
    assert np.array_equal(shop.factors, plain.factors) and np.array_equal(shop.price, plain.price)
    swapped = np.flatnonzero(np.any(shop.organic_factors != shop.factors, axis=1))
    assert len(swapped) == 100
    for i in swapped:
        donors = np.flatnonzero(np.all(shop.factors == shop.organic_factors[i], axis=1))
        assert len(donors) == 1 and shop.category[donors[0]] != shop.category[i]
    with pytest.raises(ValueError, match="misleading"):
        Catalog.generate(10, 2, seed=1, misleading=1.5)


def test_organic_browsing_follows_organic_appeal_and_recommendations_the_true_one() -> None:
    shop = Catalog.generate(200, 10, seed=5, misleading=1.0)
    shopper = shoppers(shop, 1, seed=2)[0]
    true, organic = utility(shop, shopper), utility(shop, shopper, organic=True)
    assert not np.allclose(true, organic)
    # Browsing on their own (no slate, no history): the pick is the organic favourite of
    # 20 random items, so over many first steps organic utility of the picks beats true.
    rng = np.random.default_rng(0)
    picks = []
    for _ in range(300):
        session = ShoppingSession(shop, shopper, rng, start_ms=1_790_000_000_000)
        events = session.step(None)
        if events:
            picks.append(shop.item_ids.index(events[0].item_id))
    assert organic[picks].mean() > true[picks].mean() + 0.3
