"""Item ids -> dense indices, identical on every worker and after restarts, growing while
running.

The single partition of the item-vocabulary topic is the sequencer: a worker that meets
an unknown item produces a claim (key = item id) and reads the partition up to its own
claim. An item's index is the rank of its *first* claim among first claims (0, 1, 2,
...), so every reader of the topic, on any worker, the learner or the inference
consumers, derives the same mapping, and re-claims (two workers meeting a new item at the
same time) change nothing. The topic is never compacted or expired (see the catalog).

Claims are produced outside the workers' transactions: a claim made for an event whose
processing is later retried is simply found again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.codec import encode
from schemas.records import ItemClaim


class Vocabulary(Protocol):
    """What the streams agent needs from a vocabulary."""

    async def indices(self, item_ids: Sequence[str]) -> list[int]: ...


class VocabularyTimeout(RuntimeError):
    """A claim was written but not read back in time (the broker is unwell)."""


class ItemVocabulary:
    """The Kafka-backed vocabulary; ``read_only`` for consumers that never claim."""

    def __init__(
        self,
        *,
        topic: str,
        bootstrap_servers: str,
        client_options: dict[str, Any] | None = None,
        read_only: bool = False,
        claim_timeout_s: float = 30.0,
    ) -> None:
        self._tp = TopicPartition(topic, 0)
        self._bootstrap = bootstrap_servers
        self._options = client_options or {}
        self._read_only = read_only
        self._claim_timeout_s = claim_timeout_s
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._position = 0
        self._advanced = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._follower: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every claim so far, then keep following the topic."""
        if self._consumer is not None:
            return
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,  # a claim is waited on: read it back promptly
            **self._options,
        )
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)
        if not self._read_only:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=0,
                **self._options,
            )
            await self._producer.start()
        end = (await self._consumer.end_offsets([self._tp]))[self._tp]
        self._follower = asyncio.create_task(self._follow(), name="item-vocabulary-follower")
        await self._wait_for(end)

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def __aenter__(self) -> ItemVocabulary:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- lookups --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def get(self, item_id: str) -> int | None:
        return self._index.get(item_id)

    def item_id(self, index: int) -> str:
        return self._ids[index]

    def ids(self) -> list[str]:
        """Item ids by index (a copy; safe to call from another thread)."""
        return list(self._ids)

    def mapping(self) -> dict[str, int]:
        return dict(self._index)

    async def indices(self, item_ids: Sequence[str]) -> list[int]:
        """Indices of ``item_ids``, claiming the unknown ones first."""
        index = self._index
        missing = list(dict.fromkeys(i for i in item_ids if i not in index))
        if missing:
            await self.claim(missing)
        return [index[i] for i in item_ids]

    async def claim(self, item_ids: Iterable[str]) -> None:
        if self._producer is None:
            raise RuntimeError("claim() on a read-only or unstarted ItemVocabulary")
        now = int(time.time() * 1000)
        sends = [
            await self._producer.send(
                self._tp.topic,
                encode(ItemClaim(item_id=item, ts_ms=now)),
                key=item.encode(),
                partition=0,
            )
            for item in item_ids
        ]
        last = max(meta.offset for meta in await asyncio.gather(*sends))
        await self._wait_for(last + 1)

    async def wait_for_size(self, size: int, timeout_s: float = 30.0) -> None:
        """Wait until at least ``size`` items are known (tests, readers)."""
        deadline = time.monotonic() + timeout_s
        while len(self) < size:
            if time.monotonic() > deadline:
                raise VocabularyTimeout(f"vocabulary has {len(self)} of {size} items")
            await asyncio.sleep(0.05)

    # --- internals ------------------------------------------------------------------------
    async def _wait_for(self, position: int) -> None:
        async with self._advanced:
            try:
                await asyncio.wait_for(
                    self._advanced.wait_for(lambda: self._position >= position),
                    self._claim_timeout_s,
                )
            except TimeoutError:
                raise VocabularyTimeout(
                    f"item-vocabulary read back to offset {self._position}, not {position}, "
                    f"within {self._claim_timeout_s:.0f} s: is {self._tp.topic} readable?"
                ) from None

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            batches = await consumer.getmany(self._tp, timeout_ms=200)
            for message in batches.get(self._tp, []):
                item = message.key.decode() if message.key else ""
                if item and item not in self._index:
                    self._index[item] = len(self._ids)
                    self._ids.append(item)
            position = await consumer.position(self._tp)
            if position != self._position:
                async with self._advanced:
                    self._position = position
                    self._advanced.notify_all()
