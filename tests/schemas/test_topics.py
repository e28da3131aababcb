from __future__ import annotations

import pytest

from recq.topics import CoPartitioningError, check_co_partitioning
from schemas.topics import TopicCatalog, TopicRole


def test_catalog_names_and_co_partitioning() -> None:
    catalog = TopicCatalog(prefix="shop1.", partitions=6)
    names = {spec.role: spec.name for spec in catalog.specs()}
    assert names[TopicRole.CLICKS] == "shop1.events.click"
    assert len(names) == len(TopicRole)
    co = {spec.role for spec in catalog.co_partitioned()}
    assert co == {
        TopicRole.CLICKS,
        TopicRole.CARTS,
        TopicRole.PURCHASES,
        TopicRole.IMPRESSIONS,
        TopicRole.REC_REQUESTS,
        TopicRole.RECOMMENDATIONS,
        TopicRole.SESSION_TICKS,
    }
    assert all(spec.partitions == 6 for spec in catalog.co_partitioned())
    vocab = catalog.spec(TopicRole.ITEM_VOCABULARY)
    assert vocab.config()["cleanup.policy"] == "delete"
    assert vocab.config()["retention.ms"] == "-1"


def test_co_partitioning_check() -> None:
    catalog = TopicCatalog(prefix="p.", partitions=4)
    check_co_partitioning(catalog, {"p.events.click": 4, "p.snapshots": 1})
    with pytest.raises(CoPartitioningError, match=r"p\.events\.cart has 3"):
        check_co_partitioning(catalog, {"p.events.click": 4, "p.events.cart": 3})
