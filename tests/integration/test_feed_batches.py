"""The learner's transitions feed on the real broker with both forms on the topic: a
worker's transition_batch messages and single transitions. Every transition reaches the
replay store once, and the refill after a (re)start reaches back as many transitions as
the store holds, not as many messages (a batch message holds many)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
import pytest
import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from learner.feed import TransitionFeed
from learner.replay.buffer import ReplayBuffer
from recq.topics import ensure_topics
from schemas import transition_batch
from schemas.codec import Limits
from schemas.topics import TopicCatalog, TopicRole
from tests.kafka_clients import kafka_options

pytestmark = pytest.mark.integration

NOW = 1_790_000_000_000
ROWS = 50  # transitions per batch message


def organic(user: str, seq: int) -> dict[str, Any]:
    return {"kind": "organic", "user_id": user, "seq": seq,
            "state": {"items": [1], "events": [1], "ages": [2]}, "action": 2 + seq % 7,
            "reward": 0.2, "next_state": {"items": [1, 2 + seq % 7], "events": [1, 1],
                                          "ages": [2, 1]},
            "done": False, "ts_ms": NOW + seq}  # fmt: skip


def feed_for(bootstrap: str, catalog: TopicCatalog, capacity: int) -> tuple[TransitionFeed, Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, **kafka_options(), group_id=None,
        enable_auto_commit=False, isolation_level="read_committed",
    )  # fmt: skip
    replay = ReplayBuffer.build(capacity=capacity, history_length=10, device=torch.device("cpu"),
                                prioritized=False, n_step=1, gamma=0.9, alpha=0.6)  # fmt: skip
    feed = TransitionFeed(
        consumer=consumer, producer=None,  # type: ignore[arg-type]  # nothing dead-letters
        topic=catalog.name(TopicRole.TRANSITIONS),
        dead_letter_topic=catalog.name(TopicRole.DEAD_LETTER), replay=replay,
        limits=Limits(),
    )  # fmt: skip
    return feed, consumer


async def test_the_feed_reads_both_forms_and_refills_by_transitions(
    kafka_bootstrap: str, unique: str
) -> None:
    catalog = TopicCatalog(prefix=f"fb{unique}.", partitions=2)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    topic = catalog.name(TopicRole.TRANSITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, **kafka_options())
    await producer.start()
    try:  # partition 0: 100 batch messages of 50; partition 1: 30 single records
        rows = [organic(f"u{n % 40}", n // 40) for n in range(100 * ROWS)]
        for start in range(0, len(rows), ROWS):
            (raw,) = transition_batch.pack(rows[start : start + ROWS], max_bytes=1 << 20)
            await producer.send(topic, raw, partition=0)
        for n in range(30):
            await producer.send(topic, orjson.dumps(organic("v", n)), partition=1)
        await producer.flush()
    finally:
        await producer.stop()

    feed, consumer = feed_for(kafka_bootstrap, catalog, capacity=400)  # 200 a partition
    await consumer.start()
    stopping = asyncio.Event()
    try:
        starts = await feed.assign(None)
        # 200 transitions are 4 batch messages back in partition 0 (not 200 messages: the
        # whole partition); single records count one an offset.
        assert starts == {0: 100 - math.ceil(200 / ROWS), 1: 0}
        runner = asyncio.create_task(feed.run(stopping, commit_every_s=3600))
        async with asyncio.timeout(30):
            while feed.consumed < 4 * ROWS + 30:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        stopping.set()
        await runner
    finally:
        await consumer.stop()
    assert feed.consumed == 4 * ROWS + 30  # each once, nothing more
    assert feed.positions == {0: 100, 1: 30}
