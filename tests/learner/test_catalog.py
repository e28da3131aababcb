"""Item features from the catalog topic: the follower's hand-over, bad records, and cold
start (an item the catalog describes and nobody has touched ranks with its category)."""

from __future__ import annotations

import time

import torch

from learner.catalog import CatalogFeatures
from learner.dqn import response_loss
from learner.export import SnapshotExporter, check_parity, ranking_scores
from learner.qnet import QNetwork
from learner.replay.slates import SlateStore
from schemas.codec import decode, encode
from schemas.features import category_bucket, price_feature
from schemas.records import CatalogItem, DeadLetter

from .helpers import L
from .test_slateq import slate

NOW = int(time.time() * 1000)


def item(item_id: str, category: str | None = "shoes", price: float | None = 40.0) -> CatalogItem:
    return CatalogItem(item_id=item_id, category=category, price=price, ts_ms=NOW)


def test_features_wait_for_an_index_and_are_handed_over_once() -> None:
    features = CatalogFeatures()
    features.observe(item("a", "shoes", 40.0))
    features.observe(item("b", None, None))
    index = {"a": 3}
    assert features.take(index.get) == ([3], [category_bucket("shoes")], [price_feature(40.0)])
    assert features.take(index.get) == ([], [], [])  # handed over once
    index["b"] = 7  # claimed later: its (empty) features follow
    assert features.take(index.get) == ([7], [0], [0.0])
    features.observe(item("a", "boots", 10.0))  # a newer description replaces the old
    assert features.take(index.get) == ([3], [category_bucket("boots")], [price_feature(10.0)])


def test_the_feature_encoding_is_stable_and_bounded() -> None:
    # A digest, not Python's salted hash: the same bucket in every process.
    assert category_bucket("shoes") == category_bucket("shoes") != category_bucket("boots")
    assert category_bucket(None) == 0 and category_bucket("") == 0
    assert price_feature(None) == 0.0 and price_feature(0.0) == 0.0
    assert 0.0 < price_feature(20.0) < price_feature(2000.0)


def test_a_bad_catalog_record_is_a_dead_letter_with_a_reason() -> None:
    good = decode(encode(item("a")), CatalogItem)
    assert isinstance(good, CatalogItem) and good.category == "shoes"
    raw = b'{"item_id": "a", "price": -3.0, "ts_ms": %d}' % NOW
    letter = decode(raw, CatalogItem)
    assert isinstance(letter, DeadLetter) and "price" in letter.reason
    assert letter.original == raw and letter.expected == "catalog_item"


def test_a_cold_item_ranks_with_its_category_and_the_snapshot_folds_features_in() -> None:
    # Items 0-4 are category A, 5-9 category B; 10 (A) and 11 (B) are in the catalog only:
    # never shown, never touched. Shoppers whose last item was A answer the A item of a
    # slate showing one B and one A item (click and cart) and ignore the B item; B
    # shoppers the other way round. Only the default response ranking is trained.
    torch.manual_seed(0)
    net = QNetwork(n_items=12, dim=16, history_length=L, supervised_head=False)
    category = torch.tensor([category_bucket("A")] * 5 + [category_bucket("B")] * 5 +
                            [category_bucket("A"), category_bucket("B")])  # fmt: skip
    net.set_features(torch.arange(12), category, torch.full((12,), price_feature(20.0)))
    store = SlateStore(512, L, torch.device("cpu"))
    for a in range(5):
        for b in range(5, 10):
            # The answer is in slot 1: slot 0 was examined and ignored (cascade rule).
            store.add([slate([b, a], [0, 2], [0.0, 0.7], state=(a,)),
                       slate([a, b], [0, 2], [0.0, 0.7], state=(b,))])  # fmt: skip
    net.impressions[: store.impressions().shape[0]] = store.impressions()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        batch = store.sample(32, generator)
        hidden, _, _ = net.encode(batch.items, batch.events, batch.ages)
        loss = response_loss(net, hidden, batch, None, ceiling=1.7)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = torch.zeros(2, L, dtype=torch.int64)
    state[:, -1] = torch.tensor([2, 7])  # an A shopper, a B shopper
    seen = torch.zeros_like(state)
    seen[:, -1] = 1
    with torch.no_grad():
        scores = ranking_scores(net, "response", state, seen, seen)
    # What the slates taught about the category carries to its new item.
    assert scores[0, 10] > scores[0, 11] and scores[1, 11] > scores[1, 10]
    assert scores[0, 10] > scores[0, 5:10].max() and scores[1, 11] > scores[1, 0:5].max()
    model, policy = SnapshotExporter(5, "response").export(net)
    parity = check_parity(model, policy)
    assert parity.topk_equal == 1.0 and parity.max_abs_diff < 1e-4


def test_the_dueling_mean_counts_every_items_features() -> None:
    # mean_advantage avoids gathering N feature rows; it must equal the plain mean of
    # the item vectors as every other part of the network sees them.
    torch.manual_seed(0)
    net = QNetwork(n_items=300, dim=16, history_length=L)
    net.set_features(torch.arange(300), torch.randint(0, 50, (300,)), torch.rand(300))
    with torch.no_grad():
        net.price_vector.normal_()
        user = torch.randn(3, 16)
        plain = user @ net.item_table().mean(0) + net.item_bias[:300].mean()
        assert torch.allclose(net.mean_advantage(user), plain, atol=1e-5)
