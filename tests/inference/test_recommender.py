"""Answering requests: filters always hold, popularity before a snapshot and for new
shoppers, every recommendation names its model and carries propensities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inference.model import SnapshotModel
from inference.policy import Popularity
from inference.recommender import POPULARITY, Pending, Recommender
from inference.registry import SnapshotRegistry
from inference.state import ShopperStates
from schemas.exploration import Policy
from schemas.records import (
    CartEvent,
    ClickEvent,
    LineItem,
    PurchaseEvent,
    RecRequest,
    RequestContext,
)
from tests.snapshot_fixture import ITEMS, L, WriteSnapshot

NOW = 1_795_000_000_000


def recommender(policy: Policy) -> Recommender:
    rec = Recommender(states=ShopperStates(L), popularity=Popularity(), policy=policy,
                      blocklist=frozenset({"sku-7"}), seed=3)  # fmt: skip
    for i, item in enumerate(ITEMS):
        for _ in range(len(ITEMS) - i):  # sku-0 most popular
            rec.popularity.add(item)
    return rec


def shop(rec: Recommender, user: str) -> None:
    e = {"user_id": user, "ts_ms": NOW}
    rec.states.apply(ClickEvent(event_id=f"{user}1", item_id="sku-3", **e))
    rec.states.apply(CartEvent(event_id=f"{user}2", item_id="sku-4", action="add", **e))
    line = LineItem(item_id="sku-5", quantity=1, unit_price=3.0)
    rec.states.apply(PurchaseEvent(event_id=f"{user}3", order_id="o", items=[line], **e))
    rec.states.apply(CartEvent(event_id=f"{user}4", item_id="sku-6", action="add", **e))


def request(user: str, k: int = 8, **extra: object) -> Pending:
    r = RecRequest(request_id=f"r-{user}", user_id=user, k=k, ts_ms=NOW, **extra)  # type: ignore[arg-type]
    return Pending(r, NOW + 1, NOW)


def snapshot_model(tmp_path: Path, snapshot_writer: WriteSnapshot) -> SnapshotModel:
    snapshot_writer(tmp_path)
    model = SnapshotRegistry(tmp_path).scan()
    assert model is not None
    return model


def test_filters_hold_on_the_model_and_the_popularity_paths(
    tmp_path: Path, snapshot_writer: WriteSnapshot
) -> None:
    model = snapshot_model(tmp_path, snapshot_writer)
    for policy in (Policy("greedy"), Policy("epsilon", epsilon=0.5), Policy("softmax")):
        rec = recommender(policy)
        shop(rec, "alice")
        batch = [
            request("alice", k=30, exclude_item_ids=["sku-0", "sku-1"],
                    context=RequestContext(cart_item_ids=["sku-2"])),
            request("bob", k=30, exclude_item_ids=["sku-0"]),  # no history: popularity
        ]  # fmt: skip
        for _ in range(20):
            alice, bob = rec.answer(batch, model)
            shown = [i.item_id for i in alice.items]
            # bought (5), in cart (4, 6; 2 from the request), excluded (0, 1), blocked (7)
            assert not {"sku-0", "sku-1", "sku-2", "sku-4", "sku-5", "sku-6", "sku-7"} & set(shown)
            assert len(shown) == len(set(shown)) == 20  # the snapshot's K bounds the pool
            assert alice.model_version == str(model.version)
            assert bob.model_version == POPULARITY and len(bob.items) == 30
            assert not {"sku-0", "sku-7"} & {i.item_id for i in bob.items}
            for r in (alice, bob):
                assert r.policy == policy.name
                assert all(0 < i.propensity <= 1 and np.isfinite(i.score) for i in r.items)
                assert r.request_id == f"r-{r.user_id}" and r.requested_ts_ms == NOW


def test_greedy_model_answer_is_the_snapshot_ranking(
    tmp_path: Path, snapshot_writer: WriteSnapshot
) -> None:
    model = snapshot_model(tmp_path, snapshot_writer)
    rec = recommender(Policy("greedy"))
    shop(rec, "carol")
    (answer,) = rec.answer([request("carol", k=5)], model)
    items, events, ages = rec.states.arrays("carol", NOW, model.index_of, L)
    excluded = [model.index_of[i] for i in ("sku-4", "sku-5", "sku-6", "sku-7")]
    indices, scores = model.predict(items[None], events[None], ages[None], np.array([excluded]))
    assert [i.item_id for i in answer.items] == [ITEMS[j] for j in indices[0][:5]]
    assert [i.score for i in answer.items] == [float(s) for s in scores[0][:5]]
    assert events.tolist()[-4:] == [1, 2, 3, 2]  # click, cart, purchase, cart: newest last


def test_without_a_snapshot_everyone_gets_popularity() -> None:
    rec = recommender(Policy("greedy"))
    shop(rec, "dave")
    (answer,) = rec.answer([request("dave", k=3)], None)
    assert answer.model_version == POPULARITY
    assert [i.item_id for i in answer.items] == ["sku-0", "sku-1", "sku-2"]


def test_exclude_seen_hides_the_shoppers_recent_items(
    tmp_path: Path, snapshot_writer: WriteSnapshot
) -> None:
    model = snapshot_model(tmp_path, snapshot_writer)
    rec = recommender(Policy("greedy"))
    rec.exclude_seen = True
    shop(rec, "erin")  # clicked sku-3: seen, neither bought nor in the cart
    for answer in (rec.answer([request("erin", k=30)], model)[0],
                   rec.answer([request("erin", k=30)], None)[0]):  # fmt: skip
        assert not {"sku-3", "sku-4", "sku-5", "sku-6", "sku-7"} & {i.item_id for i in answer.items}
    rec.exclude_seen = False
    (answer,) = rec.answer([request("erin", k=40)], None)
    assert "sku-3" in {i.item_id for i in answer.items}
