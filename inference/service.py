"""``recq serve``: a consumer-group member on rec-requests and the event topics that
answers requests in micro-batches and publishes recommendations.

A receiving task reads ahead into an ``Inbox`` while the answering task works, so the
next fetch is already on its way while a batch is in the model. The answering task takes
what arrived in order, applies the events (shopper state, popularity) and then answers
the requests that came with them; a waiting request is held for at most
``RECQ_SERVE_MAX_WAIT_MS`` (or until ``RECQ_SERVE_MAX_BATCH`` are waiting) so concurrent
requests share one model call. Snapshots arrive through the registry (announcements on
``snapshots``, a pin check every second); a swap never interrupts a batch. Offsets of
what was handled are committed after the batch's recommendations are acknowledged: a
crash answers a request twice rather than never.

When the group moves partitions (``Handover``) a member drops what it read ahead and the
shoppers of partitions it lost, and rebuilds the shoppers of partitions it gained
(``inference.rebuild``) before answering anything of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import start_http_server

from inference.freshness import Freshness
from inference.metrics import (
    BATCH_SIZE,
    DEAD_LETTERS,
    EXPIRED,
    LATENCY,
    REBUILD_SECONDS,
    REBUILT_EVENTS,
    SHOPPERS,
)
from inference.policy import Popularity
from inference.rebuild import StateRebuilder
from inference.recommender import Pending, Recommender
from inference.registry import SnapshotRegistry
from inference.state import ShopperStates
from kafkaio.connection import client_options, quiet_retriable_client_errors
from schemas.codec import Limits, Source, decode, encode
from schemas.records import (
    MAX_ID_LENGTH,
    CartEvent,
    ClickEvent,
    DeadLetter,
    Event,
    PurchaseEvent,
    RecRequest,
    SnapshotAnnouncement,
)
from schemas.settings import ServingSettings
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole

log = logging.getLogger("recq.serve")


async def run_server(
    settings: ServingSettings, bootstrap: str, stopping: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:  # fmt: skip
    stopping = stopping or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    quiet_retriable_client_errors()
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)
    options = client_options(settings)
    registry = SnapshotRegistry(settings.model_store_dir, threads=settings.serve_threads or None)
    freshness = Freshness()
    registry.on_swap = lambda model: freshness.swapped(
        model.manifest.trained_through.event_ts_ms if model.manifest.trained_through else None
    )
    await asyncio.to_thread(registry.scan)
    policy = settings.exploration_policy()
    blocklist = frozenset(i.strip() for i in settings.serve_blocklist.split(",") if i.strip())
    recommender = Recommender(
        states=ShopperStates(),
        popularity=Popularity(),
        policy=policy,
        blocklist=blocklist,
        exclude_seen=settings.serve_exclude_seen,
    )
    requests_topic = catalog.name(TopicRole.REC_REQUESTS)
    event_topics = {catalog.name(role) for role in EVENT_ROLES.values()}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=settings.serve_group_id, enable_auto_commit=False,
        auto_offset_reset="earliest",  # events rebuild state; stale requests are skipped
        partition_assignment_strategy=(RangePartitionAssignor,),  # co-partitioned together
        session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
        # The broker answers a fetch as soon as any byte arrives (fetch_min_bytes=1), so a
        # long wait costs no latency; a 1 ms wait made every member poll ~1,000 times a
        # second, CPU the broker and the model needed (bench/serve.py: p99 at 500 req/s
        # 98-428 ms with 1 ms, 64-66 ms with 100 ms).
        fetch_max_wait_ms=100, **options,
    )  # fmt: skip
    announcements = AIOKafkaConsumer(catalog.name(TopicRole.SNAPSHOTS),
                                     bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                     **options)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, **options)
    limits = Limits.from_settings(settings)
    rebuilder = StateRebuilder(bootstrap, options, settings.serve_state_lookback_s, limits)

    inflight: list[asyncio.Future[object]] = []
    inbox = Inbox(limit=4 * settings.serve_max_batch)
    pending: list[Pending] = []
    absorbed: dict[TopicPartition, int] = {}  # next offset: all before it handled

    def forget() -> None:
        inbox.take()
        pending.clear()
        absorbed.clear()

    handover = Handover(consumer, event_topics, rebuilder, recommender, forget)
    consumer.subscribe([requests_topic, *sorted(event_topics)], listener=handover)
    await producer.start()
    await rebuilder.start()
    await consumer.start()
    await announcements.start()
    out_topic = catalog.name(TopicRole.RECOMMENDATIONS)
    dead_letter_topic = catalog.name(TopicRole.DEAD_LETTER)
    max_age_ms = settings.serve_max_request_age_s * 1000

    async def follow_snapshots() -> None:
        while True:
            batches = await announcements.getmany(timeout_ms=500)
            for messages in batches.values():
                for m in messages:
                    a = decode(m.value, SnapshotAnnouncement)
                    if isinstance(a, SnapshotAnnouncement):
                        await asyncio.to_thread(registry.offer, a.version, a.path, a.sha256)

    async def follow_pin() -> None:
        while True:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(registry.follow_pin)

    async def receive() -> None:
        """Reads ahead while a batch is being answered: the fetcher sends its next fetch
        only once the last one is consumed, so reading in the answering loop cost every
        request that arrived meanwhile an extra broker round trip."""
        while True:
            await inbox.room()
            # aiokafka drops what it fetched for an assignment that has since been
            # revoked; what was put here before the revocation ``forget`` drops.
            batches = await consumer.getmany(timeout_ms=100, max_records=settings.serve_max_batch)
            if batches:
                inbox.put(batches, int(time.time() * 1000))

    async def serve() -> None:
        committed_at = time.monotonic()
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(inbox.arrived.wait(), 0.1)
            async with handover.lock:
                await absorb(inbox.take())
            # Micro-batch: answer when the oldest waiting request has waited max_wait_ms
            # (from its arrival at this member) or max_batch requests are waiting.
            while pending and len(pending) < settings.serve_max_batch:
                left = pending[0].received_ms + settings.serve_max_wait_ms - time.time() * 1000
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(inbox.arrived.wait(), left / 1000)
                async with handover.lock:
                    await absorb(inbox.take())
            async with handover.lock:  # a rebalance waits for the batch, or drops it
                if pending:
                    await answer(pending)
                    pending.clear()
            # Offsets are committed after the answers are acknowledged, about once a
            # second (a broker round trip per micro-batch would cap the request rate).
            if time.monotonic() - committed_at >= 1.0:
                await commit()
                committed_at = time.monotonic()
                SHOPPERS.set(len(recommender.states))
        await commit()

    async def commit() -> None:
        """Commits what was handled (events applied, requests answered), not what was
        read ahead; the answers must be acknowledged first."""
        if inflight:
            await asyncio.gather(*inflight)
            inflight.clear()
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in absorbed.items() if tp in assigned}
        absorbed.clear()
        if offsets:
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # A rebalance took partitions away: their new owner resumes from the last
                # commit, so some requests are answered twice, none never.
                log.warning("commit skipped during a rebalance: %s", exc)

    async def absorb(received: list[Received]) -> None:
        letters = []
        for tp, m, received_ms in received:
            absorbed[tp] = m.offset + 1
            source = Source(tp.topic, tp.partition, m.offset)
            if tp.topic in event_topics:
                event = decode(m.value, Event, limits=limits, source=source)
                if isinstance(event, (ClickEvent, CartEvent, PurchaseEvent)):
                    if not recommender.learn(event, tp.partition):
                        continue
                    fresh = received_ms - m.timestamp <= max_age_ms  # not replayed history
                    if fresh:
                        freshness.event(event.ts_ms)
                    if settings.serve_on_events and fresh:
                        request = _triggered(event, settings.serve_event_k)
                        pending.append(Pending(request, received_ms, m.timestamp))
                # Invalid events are the streams workers' to dead-letter: not twice.
                continue
            request = decode(m.value, RecRequest, limits=limits, source=source)
            if isinstance(request, DeadLetter):
                letters.append(request)
            elif received_ms - m.timestamp > max_age_ms:
                EXPIRED.inc()
            else:
                pending.append(Pending(request, received_ms, m.timestamp))
        for letter in letters:
            await producer.send_and_wait(dead_letter_topic, encode(letter))
            DEAD_LETTERS.labels(letter.code).inc()

    async def answer(batch: list[Pending]) -> None:
        BATCH_SIZE.observe(len(batch))
        model = registry.current  # one model for the whole batch, even across a swap
        # onnxruntime releases the GIL: the model call runs off the event loop so the
        # Kafka clients (fetches, acks, heartbeats) keep going meanwhile. Nothing else
        # touches the recommender until this returns (the serve loop awaits it).
        recommendations = await asyncio.to_thread(recommender.answer_encoded, batch, model)
        # Sent without waiting for the acks (they are awaited before the next commit),
        # so the next micro-batch is not held up by this one's broker round trip.
        for pending_request, (user_id, payload) in zip(batch, recommendations, strict=True):
            sent = await producer.send(out_topic, payload, key=user_id.encode())
            sent.add_done_callback(
                lambda _, produced=pending_request.produced_ms: LATENCY.observe(
                    time.time() * 1000 - produced
                )
            )
            inflight.append(sent)

    tasks = [asyncio.create_task(t()) for t in (follow_snapshots, follow_pin)]
    received = asyncio.create_task(receive())
    served = asyncio.create_task(serve())
    tasks += [received, served]
    if ready is not None:
        ready.set()
    log.info("serving %s (snapshot %s)", requests_topic,
             registry.current.version if registry.current else "none: popularity")  # fmt: skip
    try:
        await asyncio.wait([served, received, asyncio.create_task(stopping.wait())],
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        for task in (served, received):
            if task.done():
                task.result()  # surface a failure (the member must not go on answering nothing)
    finally:
        stopping.set()
        if not served.done():  # let it answer what it holds and make its last commit
            await asyncio.wait([served], timeout=5.0)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await consumer.stop()
        await rebuilder.stop()
        await announcements.stop()
        await producer.stop()


Received = tuple[TopicPartition, ConsumerRecord[bytes, bytes], int]  # (tp, message, ms)


class Handover(ConsumerRebalanceListener):  # type: ignore[misc]
    """What a member does when the group moves partitions (eager rebalancing: every
    partition is revoked, then the new assignment given).

    On revocation: ``forget`` drops what was read ahead, the requests waiting for a batch
    and the handled-but-uncommitted offsets. aiokafka resumes every assigned partition
    from its committed offset after a rebalance, so all of it is read again (events are
    idempotent, requests may be answered twice, none never). On assignment: the shoppers
    of partitions no longer held are dropped, those of partitions newly held are rebuilt
    up to the offset the member resumes from, and only then does the serve loop (waiting
    on ``lock``) answer anything."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        event_topics: set[str],
        rebuilder: StateRebuilder,
        recommender: Recommender,
        forget: Callable[[], object],
    ) -> None:
        self.lock = asyncio.Lock()  # held by the serve loop while it reads or writes state
        self._consumer = consumer
        self._event_topics = event_topics
        self._rebuilder = rebuilder
        self._recommender = recommender
        self._forget = forget
        self._held: set[int] = set()  # partition numbers whose shoppers are kept

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            self._forget()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            states = self._recommender.states
            events = [tp for tp in assigned if tp.topic in self._event_topics]
            held = {tp.partition for tp in events}
            dropped = states.drop_partitions(self._held - held)
            gained = [tp for tp in events if tp.partition not in self._held]
            # Where the member resumes each partition (the group's committed offset):
            # the rebuild reads up to it, the consumer from it.
            ends = {tp: await self._consumer.position(tp) for tp in gained}
            rebuilt = await self._rebuilder.rebuild(ends, self._recommender.learn)
            self._held = held
            REBUILT_EVENTS.inc(rebuilt.events)
            REBUILD_SECONDS.set(rebuilt.seconds)
            SHOPPERS.set(len(states))
            log.info(
                "partitions %s: dropped %d shoppers of partitions no longer held; rebuilt "
                "partitions %s from %d events (lookback %g s) in %.2f s: %d shoppers held",
                sorted(held), dropped, sorted({tp.partition for tp in gained}), rebuilt.events,
                self._rebuilder.lookback_s, rebuilt.seconds, len(states),
            )  # fmt: skip


class Inbox:
    """Messages read ahead by the receiving task, in the order read, until the answering
    task takes them. Bounded: a member that falls behind stops fetching (the broker keeps
    the backlog) instead of buffering without limit."""

    def __init__(self, limit: int) -> None:
        self._items: list[Received] = []
        self._limit = limit
        self.arrived = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()

    def put(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
            received_ms: int) -> None:  # fmt: skip
        for tp, messages in batches.items():
            self._items.extend((tp, m, received_ms) for m in messages)
        self.arrived.set()
        if len(self._items) >= self._limit:
            self._has_room.clear()

    async def room(self) -> None:
        await self._has_room.wait()

    def take(self) -> list[Received]:
        items, self._items = self._items, []
        self.arrived.clear()
        self._has_room.set()
        return items


def _triggered(event: ClickEvent | CartEvent | PurchaseEvent, k: int) -> RecRequest:
    """The request an event stands for when serving is triggered by events."""
    return RecRequest(
        request_id=f"event:{event.event_id}"[:MAX_ID_LENGTH],
        user_id=event.user_id,
        k=k,
        ts_ms=event.ts_ms,
    )
