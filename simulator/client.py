"""A shop's side of recq over Kafka: a producer for its events and recommendation
requests, and the recommendations topic read back and routed to the requests waiting
for them. One client for everything that plays the shop: ``recq simulate``, ``recq
demo`` and the tests."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.codec import decode
from schemas.records import Recommendation
from schemas.topics import TopicCatalog, TopicRole


class Answers:
    """Every recommendation read, handed to the request waiting for it (``expect``).
    With ``counting``, also counted by request id (a request answered twice counts 2:
    what at-least-once serving promises is checked on ``count``); off by default, since
    the count grows with every request and `recq simulate --forever` runs for days.
    Values that are not recommendations are counted in ``invalid``."""

    def __init__(self, consumer: AIOKafkaConsumer, *, counting: bool = False) -> None:
        self.consumer = consumer
        self.counting = counting
        self.waiting: dict[str, asyncio.Future[Recommendation]] = {}
        self.count: Counter[str] = Counter()
        self.invalid = 0
        self.arrived = asyncio.Condition()

    def expect(self, request_id: str) -> asyncio.Future[Recommendation]:
        """A future resolved with the first answer to ``request_id``."""
        future: asyncio.Future[Recommendation] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        """Stop waiting for ``request_id`` (it timed out)."""
        self.waiting.pop(request_id, None)

    async def all_of(self, wanted: set[str]) -> None:
        """Until every request id in ``wanted`` has been answered at least once."""
        if not self.counting:
            raise RuntimeError("Answers.all_of reads the counts: create it with counting=True")
        async with self.arrived:
            await self.arrived.wait_for(lambda: wanted <= self.count.keys())

    async def run(self) -> None:
        while True:
            batches = (await self.consumer.getmany(timeout_ms=100)).values()
            for messages in batches:
                for m in messages:
                    r = decode(m.value, Recommendation)
                    if not isinstance(r, Recommendation):
                        self.invalid += 1
                        continue
                    if self.counting:
                        self.count[r.request_id] += 1
                    future = self.waiting.pop(r.request_id, None)
                    if future is not None and not future.done():
                        future.set_result(r)
            if self.counting and batches:
                async with self.arrived:
                    self.arrived.notify_all()


class ShopClient:
    """``async with ShopClient(...) as shop``: ``shop.producer`` sends events and requests
    (acks from all replicas, no linger: a shopper waits on each), ``shop.answers``
    receives recommendations from the end of the topic (``from_earliest`` for a test
    that must see answers to requests sent before it started reading; ``count_answers``
    for one that checks how often each request was answered)."""

    def __init__(self, bootstrap: str, topics: TopicCatalog, client_options: dict[str, Any],
                 *, from_earliest: bool = False, count_answers: bool = False) -> None:  # fmt: skip
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                         **client_options)  # fmt: skip
        self.consumer = AIOKafkaConsumer(
            topics.name(TopicRole.RECOMMENDATIONS), bootstrap_servers=bootstrap,
            auto_offset_reset="earliest" if from_earliest else "latest", **client_options,
        )  # fmt: skip
        self.answers = Answers(self.consumer, counting=count_answers)
        self._router: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ShopClient:
        await self.producer.start()
        try:
            await self.consumer.start()
        except BaseException:
            await self.producer.stop()
            raise
        self._router = asyncio.create_task(self.answers.run())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:  # fmt: skip
        if self._router is not None:
            self._router.cancel()
        await self.producer.stop()
        await self.consumer.stop()
