"""Helpers for the streams tests on the real broker: a scripted shop log, the transitions
the rules say it must produce, a worker subprocess, and a read_committed reader."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kafkaio.vocabulary import ItemVocabulary
from recq.processes import StageProcess, recq_command
from schemas import transition_batch
from schemas.codec import encode
from schemas.records import (
    CartEvent,
    ClickEvent,
    LineItem,
    PurchaseEvent,
    Recommendation,
    RecommendedItem,
)
from schemas.settings import stage_env
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole
from tests.kafka_clients import kafka_options
from tests.reference_rules import reference_slates, reference_transitions

ShopEvent = ClickEvent | CartEvent | PurchaseEvent
LogRecord = ShopEvent | Recommendation
REORDER_WINDOW_S = 3.0
SESSION_TIMEOUT_S = 8.0
HISTORY_LENGTH = 10  # the setting's default, which the worker under test runs with


def scripted_log(users: int, events_per_user: int, seed: int) -> list[LogRecord]:
    """Journeys of browsing, carting, taking out of the cart and buying, with event-time
    gaps that end sessions, events produced out of order within a second, and repeated
    deliveries."""
    rng = random.Random(seed)
    start = int(time.time() * 1000) - 3_600_000
    log: list[LogRecord] = []
    for u in range(users):
        user = f"user-{seed}-{u}"
        ts = start + rng.randrange(60_000)
        journey: list[ShopEvent] = []
        for n in range(events_per_user):
            ts += rng.choice([400, 900, 2_500, 4_000, 30_000])  # 30 s > timeout: new session
            item = f"sku-{rng.randrange(60)}"
            eid = f"{user}-e{n}"
            roll = rng.random()
            if roll < 0.6:
                journey.append(ClickEvent(event_id=eid, user_id=user, ts_ms=ts, item_id=item))
            elif roll < 0.78:
                journey.append(
                    CartEvent(event_id=eid, user_id=user, ts_ms=ts, item_id=item, action="add")
                )
            elif roll < 0.85:
                journey.append(
                    CartEvent(event_id=eid, user_id=user, ts_ms=ts, item_id=item, action="remove")
                )
            else:
                lines = [LineItem(item_id=item, quantity=1, unit_price=9.5)]
                if rng.random() < 0.5:
                    lines.append(
                        LineItem(item_id=f"sku-{rng.randrange(60)}", quantity=2, unit_price=3.0)
                    )
                journey.append(
                    PurchaseEvent(
                        event_id=eid, user_id=user, ts_ms=ts, order_id=f"o{eid}", items=lines
                    )
                )
        shown = _recommendations(journey, user, rng)
        # Out of order: swap neighbours less than a second apart; and re-deliver one event.
        for i in range(len(journey) - 1):
            if journey[i + 1].ts_ms - journey[i].ts_ms < 1_000 and rng.random() < 0.5:
                journey[i], journey[i + 1] = journey[i + 1], journey[i]
        journey.insert(rng.randrange(1, len(journey) + 1), journey[rng.randrange(len(journey))])
        for at, rec in shown:  # produced near the event it was served after
            journey.insert(min(at, len(journey)), rec)  # type: ignore[arg-type]
        log += journey
    return log


def _recommendations(
    journey: list[ShopEvent], user: str, rng: random.Random
) -> list[tuple[int, Recommendation]]:
    """Recommendations served 1 ms after some of the journey's events (never after the
    last), each with 3 slots; the next event, when a click or cart add, answers one of
    them (60 %: its item put in the slot it names) or names a slot it is not in (10 %).
    A repeated delivery of one of them tests the rec_id dedupe."""
    out: list[tuple[int, Recommendation]] = []
    for i in range(len(journey) - 1):
        if rng.random() >= 0.35:
            continue
        served = journey[i].ts_ms + 1
        items = [f"sku-{rng.randrange(60)}" for _ in range(3)]
        nxt, roll = journey[i + 1], rng.random()
        position = rng.randrange(3)
        if isinstance(nxt, ClickEvent | CartEvent) and roll < 0.7:
            if roll < 0.6:
                items[position] = nxt.item_id
            elif nxt.item_id in items:
                position = (items.index(nxt.item_id) + 1) % 3
            rec_id = f"{user}-r{i}"
            journey[i + 1] = nxt.model_copy(update={"rec_id": rec_id, "position": position})
        rec = Recommendation(
            rec_id=f"{user}-r{i}", request_id=f"{user}-q{i}", user_id=user,
            items=[RecommendedItem(item_id=item, score=1.0 - 0.1 * n, propensity=p)
                   for n, (item, p) in enumerate(zip(items, (0.9, 0.05, 0.05), strict=True))],
            model_version="7", policy="epsilon-0.1", requested_ts_ms=served,
            received_ts_ms=served, served_ts_ms=served,
        )  # fmt: skip
        out.append((i + 1 + len(out), rec))
    if out:
        out.append((len(journey) + len(out), out[0][1]))  # delivered twice
    return out


def item_ids(event: ShopEvent) -> list[str]:
    return (
        [line.item_id for line in event.items]
        if isinstance(event, PurchaseEvent)
        else [event.item_id]
    )


def expected_transitions(log: list[LogRecord]) -> Counter[bytes]:
    """What the documented rules (docs/streams.md) say the worker must write for ``log``
    (every event of a user within the reorder window, then the session idles out), from
    the independent reference in tests/reference_rules.py; items as ids, canonical JSON,
    as a multiset."""
    rules = {"history_length": HISTORY_LENGTH, "session_timeout_ms": int(SESSION_TIMEOUT_S * 1000)}
    events = [e for e in log if not isinstance(e, Recommendation)]
    out = reference_transitions(events, **rules) + reference_slates(log, **rules)
    return Counter(canonical(t, lambda item: item) for t in out)


def canonical(transition: dict[str, Any], item_of: Any) -> bytes:
    t = dict(transition)
    t.pop("schema_version", None)
    if t["kind"] == "slate":
        t["items"] = [item_of(i) for i in t["items"]]
    else:
        t["action"] = item_of(t["action"])
    for key in ("state", "next_state"):
        if t.get(key) is not None:
            t[key] = {**t[key], "items": [item_of(i) for i in t[key]["items"]]}
    return orjson.dumps(t, option=orjson.OPT_SORT_KEYS)


async def produce(
    bootstrap: str,
    catalog: TopicCatalog,
    log: list[LogRecord],
    extra: list[tuple[str, bytes | None, bytes]] = (),
) -> None:  # type: ignore[assignment]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, **kafka_options(), enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        for event in log:
            role = (
                TopicRole.RECOMMENDATIONS
                if isinstance(event, Recommendation)
                else EVENT_ROLES[event.type]
            )
            await producer.send(catalog.name(role), encode(event), key=event.user_id.encode())
        for topic, key, value in extra:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


@dataclass
class Committed:
    transitions: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]


async def read_committed(
    bootstrap: str, catalog: TopicCatalog, *, want: int, timeout_s: float, settle_s: float = 3.0
) -> Committed:
    """Read transitions and dead letters (read_committed) until ``want`` transitions
    arrived and nothing more came for ``settle_s``, or the timeout."""
    consumer = AIOKafkaConsumer(
        catalog.name(TopicRole.TRANSITIONS),
        catalog.name(TopicRole.DEAD_LETTER),
        bootstrap_servers=bootstrap,
        **kafka_options(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    got = Committed([], [])
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            if batches:
                quiet_since = time.monotonic()
            for messages in batches.values():
                for m in messages:
                    if m.topic.endswith("transitions"):
                        got.transitions += transition_batch.unpack(m.value)  # either form
                    else:
                        got.dead_letters.append(orjson.loads(m.value))
            if len(got.transitions) >= want and time.monotonic() - quiet_since >= settle_s:
                break
    finally:
        await consumer.stop()
    return got


class CommittedTransitions:
    """Counts the committed transitions (either form) as they come, with one consumer
    read incrementally: how far a worker has got, to time a fault mid-stream."""

    def __init__(self, bootstrap: str, catalog: TopicCatalog) -> None:
        self.consumer = AIOKafkaConsumer(
            catalog.name(TopicRole.TRANSITIONS), bootstrap_servers=bootstrap,
            **kafka_options(), group_id=None, auto_offset_reset="earliest",
            enable_auto_commit=False, isolation_level="read_committed",
        )  # fmt: skip
        self.seen = 0

    async def __aenter__(self) -> CommittedTransitions:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def count(self) -> int:
        for messages in (await self.consumer.getmany(timeout_ms=100)).values():
            self.seen += sum(transition_batch.count(m.value) for m in messages)
        return self.seen


async def actual_multiset(
    bootstrap: str, catalog: TopicCatalog, transitions: list[dict[str, Any]]
) -> Counter[bytes]:
    async with ItemVocabulary(
        topic=catalog.name(TopicRole.ITEM_VOCABULARY),
        bootstrap_servers=bootstrap,
        read_only=True,
        client_options=kafka_options(),
    ) as vocabulary:
        return Counter(canonical(t, vocabulary.item_id) for t in transitions)


def assert_same_transitions(
    expected: Counter[bytes], actual: Counter[bytes], context: str, log_tail: str
) -> None:
    """Multiset equality, with what was lost and duplicated in the failure message."""
    lost, duplicated = expected - actual, actual - expected
    assert not lost and not duplicated, (
        f"{context}{sum(lost.values())} lost, {sum(duplicated.values())} duplicated of "
        f"{sum(expected.values())}\nlost, first 5: {list(lost)[:5]}\n"
        f"duplicated, first 5: {list(duplicated)[:5]}\n{log_tail}"
    )


class WorkerProcess(StageProcess):
    """`recq worker` in a subprocess, its log kept for failure reports."""

    def __init__(self, env: dict[str, str], log_path: Path, cmd: list[str] | None = None) -> None:
        super().__init__(env, log_path, cmd or recq_command("worker"))


def worker_env(bootstrap: str, prefix: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """A streams worker's environment for these tests; ``extra`` overrides the defaults."""
    settings: dict[str, object] = {
        "RECQ_BOOTSTRAP_SERVERS": bootstrap,
        "RECQ_TOPIC_PREFIX": prefix,
        "RECQ_STREAMS_APP_ID": f"{prefix}streams",
        "RECQ_PARTITIONS": 4,
        "RECQ_REORDER_WINDOW_S": REORDER_WINDOW_S,
        "RECQ_SESSION_TIMEOUT_S": SESSION_TIMEOUT_S,
        "RECQ_SESSION_TICK_S": 0.5,
        "RECQ_BROKER_SESSION_TIMEOUT_S": 6,
        "RECQ_DATA_DIR": data_dir,
    }
    env = stage_env(**{**settings, **extra})  # type: ignore[arg-type]
    env["PYTHONUNBUFFERED"] = "1"
    return env
