"""The learner's view of the catalog topic: every item's features (category bucket, price
feature: ``schemas.features``), ready for the training thread to write into the network.

The follower reads the compacted topic from its beginning and keeps following it. A
described item is claimed in the item vocabulary, so it has an index (and a row every
snapshot scores) before anyone has interacted with it: that is what lets a new item be
recommended from its features alone. A record that does not decode is dead-lettered with
its original bytes and a reason; nothing stops. Features wait until their item has an
index, then ``take`` hands them over once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import Limits, Source, decode
from schemas.features import category_bucket, price_feature
from schemas.records import CatalogItem, DeadLetter

log = logging.getLogger("recq.learner.catalog")

#: (item indices, category buckets, price features) of items whose features are new.
FeatureRows = tuple[list[int], list[int], list[float]]


class CatalogFeatures:
    """Item id -> (category bucket, price feature), fed by ``observe`` (the follower, or a
    test) and drained by ``take`` (the training thread)."""

    def __init__(self) -> None:
        self._features: dict[str, tuple[int, float]] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self.described = 0  # catalog records applied

    def observe(self, item: CatalogItem) -> None:
        with self._lock:
            self._features[item.item_id] = (category_bucket(item.category),
                                            price_feature(item.price))  # fmt: skip
            self._pending.add(item.item_id)
            self.described += 1

    def take(self, index_of: Callable[[str], int | None]) -> FeatureRows:
        """The features of pending items that have an index now (each handed over once
        per description); the rest stay pending."""
        out: FeatureRows = ([], [], [])
        with self._lock:
            for item_id in list(self._pending):
                index = index_of(item_id)
                if index is None:
                    continue
                bucket, price = self._features[item_id]
                out[0].append(index)
                out[1].append(bucket)
                out[2].append(price)
                self._pending.discard(item_id)
        return out


class CatalogFollower:
    """Follows the catalog topic into a ``CatalogFeatures``; claims described items."""

    def __init__(
        self,
        *,
        topic: str,
        bootstrap_servers: str,
        features: CatalogFeatures,
        claim: Callable[[list[str]], Awaitable[None]],
        dead_letter: Callable[[DeadLetter], Awaitable[None]],
        limits: Limits,
        group_id: str,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.features = features
        self.claim = claim
        self.dead_letter = dead_letter
        self.limits = limits
        # The group only stores how far bad records were dead-lettered: every start reads
        # the whole topic again (the features live in memory), and letters are written
        # once, for records past that position.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", **(client_options or {}),
        )  # fmt: skip
        self._partition = TopicPartition(topic, 0)  # the topic has one (schemas/topics.py)
        self._lettered_to = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        await self._consumer.start()
        self._consumer.assign([self._partition])
        self._lettered_to = await self._consumer.committed(self._partition) or 0
        await self._consumer.seek_to_beginning(self._partition)
        self._task = asyncio.create_task(self._follow(), name="recq-catalog-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._consumer.stop()

    async def _follow(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            described: list[str] = []
            for tp, messages in batches.items():
                for m in messages:
                    source = Source(tp.topic, tp.partition, m.offset)
                    record = decode(m.value, CatalogItem, limits=self.limits, source=source)
                    if isinstance(record, DeadLetter):
                        if m.offset >= self._lettered_to:
                            await self.dead_letter(record)
                            log.warning("dead-lettered a catalog record: %s", record.reason)
                        continue
                    self.features.observe(record)
                    described.append(record.item_id)
            if described:
                await self.claim(described)
            if batches:
                position = await self._consumer.position(self._partition)
                if position > self._lettered_to:
                    # After the letters: a crash in between writes one twice, never none.
                    await self._consumer.commit({self._partition: position})
                    self._lettered_to = position
