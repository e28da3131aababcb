"""``recq roundtrip``: the foundation end to end, a quick check of a broker. Starts the
embedded broker (unless RECQ_BOOTSTRAP_SERVERS names a cluster), creates the topics,
produces sample shopper journeys plus a few invalid messages, consumes and decodes them,
dead-letters the bad ones with their original bytes, reads the dead letters back, and
stops what it started."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from kafkaio.connection import check_broker, client_options
from recq.embedded_kafka import EmbeddedKafka
from recq.errors import RecqError
from recq.topics import ensure_topics
from schemas.codec import Limits, Source, decode, encode
from schemas.examples import example_journey
from schemas.records import EVENT_CLASSES, DeadLetter, EventType
from schemas.settings import StageSettings
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole

CONSUME_TIMEOUT_S = 30.0


def invalid_samples(now_ms: int) -> list[tuple[EventType, bytes]]:
    """Messages a buggy producer might send, one per kind of mistake."""
    return [
        ("click", b'{"event_id": "bad-1", "user_id": "u1", '),
        (
            "click",
            b'{"type": "click", "event_id": "bad-2", "user_id": 42, "ts_ms": %d, '
            b'"item_id": "sku-1"}' % now_ms,
        ),
        (
            "purchase",
            b'{"type": "purchase", "event_id": "bad-3", "user_id": "u1", "ts_ms": %d, '
            b'"order_id": "o1", "items": [{"item_id": "sku-1", "quantity": 1, '
            b'"unit_price": -5.0}]}' % now_ms,
        ),
        (
            "cart",
            b'{"type": "wishlist", "event_id": "bad-4", "user_id": "u1", "ts_ms": %d}' % now_ms,
        ),
        (
            "click",
            b'{"type": "click", "event_id": "bad-5", "user_id": "u1", "ts_ms": %d, '
            b'"item_id": "sku-1"}' % (now_ms + 3650 * 86_400_000),
        ),
        ("cart", b"\xff\xfe not utf-8"),
    ]


@contextlib.contextmanager
def _broker(settings: StageSettings, console: Console) -> Iterator[str]:
    if settings.bootstrap_servers:
        console.print(f"using the Kafka cluster at {settings.bootstrap_servers}")
        yield settings.bootstrap_servers
        return
    with tempfile.TemporaryDirectory(prefix="recq-demo-") as tmp:
        broker = EmbeddedKafka(Path(tmp), cache_dir=settings.cache_dir)
        t0 = time.monotonic()
        with console.status("starting the embedded Kafka broker (KRaft)..."):
            state = broker.start()
        console.print(
            f"Kafka {state.kafka_version} up at {state.bootstrap_servers} "
            f"in {time.monotonic() - t0:.1f} s"
        )
        try:
            yield state.bootstrap_servers
        finally:
            broker.stop()
            console.print("Kafka stopped")


def run_roundtrip(settings: StageSettings, *, shoppers: int, console: Console) -> None:
    # Right after topic creation aiokafka logs transient leader/coordinator retries.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with _broker(settings, console) as bootstrap:
        asyncio.run(_round_trip(settings, bootstrap, shoppers, console))


async def _round_trip(
    settings: StageSettings, bootstrap: str, shoppers: int, console: Console
) -> None:
    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)
    await check_broker(settings, bootstrap)
    opts = client_options(settings)
    outcomes = await ensure_topics(
        catalog,
        bootstrap_servers=bootstrap,
        replication_factor=settings.replication_factor,
        client_options=opts,
    )
    created = sum(o.status == "created" for o in outcomes)
    console.print(f"topics: {created} created, {len(outcomes) - created} already there")

    now_ms = int(time.time() * 1000)
    run_tag = f"demo{now_ms}"
    # Keys tag this run's messages, so a reused cluster's older messages are left out.
    bad_key = f"{run_tag}-invalid".encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, **opts)
    await producer.start()
    sent = Counter[str]()
    try:
        for i in range(shoppers):
            user = f"{run_tag}-shopper-{i}"
            for event in example_journey(user, now_ms - 60_000 + i):
                topic = catalog.name(EVENT_ROLES[event.type])
                await producer.send(topic, encode(event), key=user.encode())
                sent[event.type] += 1
        for event_type, raw in invalid_samples(now_ms):
            await producer.send(catalog.name(EVENT_ROLES[event_type]), raw, key=bad_key)
            sent["invalid"] += 1
        await producer.flush()
        console.print(f"produced {sum(sent.values())} messages: {dict(sent)}")

        valid, letters = await _consume_and_decode(
            catalog, bootstrap, opts, settings, run_tag, bad_key, sent
        )
        dlq = catalog.name(TopicRole.DEAD_LETTER)
        for letter in letters:
            await producer.send(dlq, encode(letter), key=bad_key)
        await producer.flush()
    finally:
        await producer.stop()

    read_back = await _read_dead_letters(bootstrap, opts, dlq, run_tag, bad_key, len(letters))
    intact = sum(
        1
        for letter in read_back
        if any(letter.original == sent_letter.original for sent_letter in letters)
    )
    table = Table("event type", "valid records decoded", title="decoded events")
    for kind, count in sorted(valid.items()):
        table.add_row(kind, str(count))
    console.print(table)
    dead = Table("code", "reason", "source", title=f"dead letters on {dlq}")
    for letter in read_back:
        where = f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}"
        dead.add_row(letter.code, letter.reason, where)
    console.print(dead)
    expected_valid = sum(n for kind, n in sent.items() if kind != "invalid")
    ok = sum(valid.values()) == expected_valid and intact == sent["invalid"]
    console.print(
        f"{sum(valid.values())}/{expected_valid} valid events decoded, "
        f"{intact}/{sent['invalid']} invalid ones dead-lettered with their original bytes: "
        + ("[bold green]round trip OK[/]" if ok else "[bold red]MISMATCH[/]")
    )
    if not ok:
        raise RecqError("the demo round trip lost or mangled messages (see the tables above)")


async def _consume_and_decode(
    catalog: TopicCatalog,
    bootstrap: str,
    opts: dict[str, object],
    settings: StageSettings,
    run_tag: str,
    bad_key: bytes,
    sent: Counter[str],
) -> tuple[Counter[str], list[DeadLetter]]:
    topic_types = {catalog.name(role): kind for kind, role in EVENT_ROLES.items()}
    consumer = AIOKafkaConsumer(
        *topic_types,
        bootstrap_servers=bootstrap,
        group_id=f"{run_tag}-reader",
        auto_offset_reset="earliest",
        **opts,
    )
    await consumer.start()
    limits = Limits.from_settings(settings)
    valid = Counter[str]()
    letters: list[DeadLetter] = []
    wanted = sum(sent.values())
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    try:
        while sum(valid.values()) + len(letters) < wanted and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                kind = topic_types[tp.topic]
                for msg in messages:
                    got = decode(
                        msg.value,
                        EVENT_CLASSES[kind],
                        limits=limits,
                        source=Source(msg.topic, msg.partition, msg.offset),
                    )
                    if isinstance(got, DeadLetter):
                        if msg.key == bad_key:
                            letters.append(got)
                    elif got.user_id.startswith(run_tag):
                        valid[got.type] += 1
    finally:
        await consumer.stop()
    return valid, letters


async def _read_dead_letters(
    bootstrap: str, opts: dict[str, object], dlq: str, run_tag: str, key: bytes, expected: int
) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(
        dlq,
        bootstrap_servers=bootstrap,
        group_id=f"{run_tag}-dlq",
        auto_offset_reset="earliest",
        **opts,
    )
    await consumer.start()
    found: list[DeadLetter] = []
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(
                    DeadLetter.model_validate_json(m.value) for m in messages if m.key == key
                )
    finally:
        await consumer.stop()
    return found
