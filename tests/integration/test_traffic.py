"""Simulated shoppers on the real broker: the learned arm asks a running `serve`
member and gets answers, its events carry those recommendations' rec_ids, and every
event the shoppers make lands on the event topics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from inference.service import run_server
from recq.topics import ensure_topics
from schemas.codec import decode
from schemas.records import Event, Recommendation
from schemas.settings import ServingSettings, load_settings
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole
from simulator.client import ShopClient
from simulator.shop import Catalog, shoppers
from simulator.traffic import Traffic
from tests.kafka_clients import kafka_options

pytestmark = pytest.mark.integration


async def test_shoppers_ask_recq_and_react(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"sim{unique}."
    settings = load_settings(
        ServingSettings,
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=prefix,
        partitions=2,
        data_dir=tmp_path,
        serve_group_id=f"serve-{unique}",
    )
    catalog = TopicCatalog(prefix=prefix, partitions=2)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    stopping, ready = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(run_server(settings, kafka_bootstrap, stopping, ready))
    client = ShopClient(kafka_bootstrap, catalog, kafka_options(), from_earliest=True)
    try:
        async with client:
            await asyncio.wait_for(ready.wait(), 60)
            shop = Catalog.generate(n_items=300, n_categories=6, seed=5)
            traffic = Traffic(catalog=shop, topics=catalog, producer=client.producer,
                              answers=client.answers, seed=5, answer_timeout_s=20.0)  # fmt: skip
            stats = await asyncio.wait_for(traffic.run(40, concurrency=10), 240)
    finally:
        stopping.set()
        await asyncio.wait_for(server, 60)

    assert {arm: s.sessions for arm, s in stats.items()} == {
        "learned": 8,
        "coview": 8,
        "popularity": 8,
        "random": 8,
        "oracle": 8,
    }
    learned = stats["learned"]
    assert learned.unanswered == 0 and learned.shown > 0
    assert set(learned.versions) == {"popularity"}  # no snapshot in this store yet
    # Eight sessions of a weak arm may earn nothing; most arms earn something.
    produced = sum(s.reward > 0 for s in stats.values())
    assert produced >= 4

    reader = AIOKafkaConsumer(
        *(catalog.name(r) for r in EVENT_ROLES.values()),
        catalog.name(TopicRole.RECOMMENDATIONS),
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        **kafka_options(),
    )
    await reader.start()
    try:
        events, logged = [], []
        for _ in range(20):
            for tp, messages in (await reader.getmany(timeout_ms=500)).items():
                if tp.topic == catalog.name(TopicRole.RECOMMENDATIONS):
                    logged += [decode(m.value, Recommendation) for m in messages]
                else:
                    events += [decode(m.value, Event) for m in messages]
    finally:
        await reader.stop()
    # Every event of the logged arms reaches Kafka; the oracle's shoppers stay off it.
    total = sum(len(s.events) for arm, s in traffic.sessions_log if arm != "oracle")
    assert len(events) == total and all(not hasattr(e, "code") for e in events)
    oracle_users = {s.user_id for s in shoppers(shop, 40, 5)[4::5]}
    assert not oracle_users & {e.user_id for e in events}
    # The baselines log their slates like a policy, with their propensities.
    baseline = [
        r for r in logged if isinstance(r, Recommendation) and r.model_version == "baseline"
    ]
    assert {r.policy for r in baseline} == {"coview", "popularity", "random"}
    assert all(
        [i.propensity for i in r.items] == [1 / (300 - j) for j in range(len(r.items))]
        for r in baseline if r.policy == "random"
    )  # fmt: skip
    recq_rec_ids = {e.rec_id for e in events if e.rec_id and len(e.rec_id) == 32}
    assert recq_rec_ids  # the learned arm clicked on recq's recommendations
