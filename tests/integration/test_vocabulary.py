"""The item vocabulary on the real broker: workers claiming concurrently agree on one
collision-free dense mapping, which survives restarts and grows without renumbering."""

from __future__ import annotations

import asyncio

import pytest

from kafkaio.vocabulary import ItemVocabulary
from recq.topics import ensure_topics
from schemas.topics import TopicCatalog, TopicRole
from tests.kafka_clients import kafka_options

pytestmark = pytest.mark.integration


def vocabulary(bootstrap: str, topic: str, *, read_only: bool = False) -> ItemVocabulary:
    return ItemVocabulary(
        topic=topic,
        bootstrap_servers=bootstrap,
        client_options=kafka_options(),
        read_only=read_only,
    )


async def test_two_workers_restart_and_growth(kafka_bootstrap: str, unique: str) -> None:
    catalog = TopicCatalog(prefix=f"voc{unique}.", partitions=2)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    topic = catalog.name(TopicRole.ITEM_VOCABULARY)
    items = [f"sku-{n}" for n in range(300)]

    async with vocabulary(kafka_bootstrap, topic) as a, vocabulary(kafka_bootstrap, topic) as b:
        # Overlapping catalogs claimed at the same time, in different orders, in batches.
        async def claim(v: ItemVocabulary, order: list[str]) -> list[int]:
            got: list[int] = []
            for start in range(0, len(order), 25):
                got += await v.indices(order[start : start + 25])
            return got

        got_a, got_b = await asyncio.gather(claim(a, items[:200]), claim(b, items[100:][::-1]))
        await a.wait_for_size(300)
        await b.wait_for_size(300)
        assert a.mapping() == b.mapping()
        mapping = a.mapping()
        assert sorted(mapping.values()) == list(range(300))  # dense and collision-free
        assert got_a == [mapping[i] for i in items[:200]]
        assert got_b == [mapping[i] for i in items[100:][::-1]]

    # Restart: a fresh reader (another worker, the learner, inference) sees the same.
    async with vocabulary(kafka_bootstrap, topic, read_only=True) as reader:
        assert reader.mapping() == mapping

    # Growth while running: new items extend the range, old indices never move; a
    # re-claim of a known item (two workers racing) changes nothing.
    async with (
        vocabulary(kafka_bootstrap, topic) as c,
        vocabulary(kafka_bootstrap, topic, read_only=True) as follower,
    ):
        await c.claim(["sku-5"])
        new = await c.indices(["sku-new-1", "sku-5", "sku-new-2"])
        assert new == [300, mapping["sku-5"], 301]
        await follower.wait_for_size(302)
        assert follower.mapping() == {**mapping, "sku-new-1": 300, "sku-new-2": 301}
