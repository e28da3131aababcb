"""A producer outside Python: Kafka's own console producer, run from the resolved jars,
writes events in the documented JSON; an aiokafka consumer decodes them via schemas/."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from kafkaio.connection import java_client_properties
from recq.kafka_dist import LOG4J_CONFIG, KafkaDistribution, find_java
from recq.topics import ensure_topics
from schemas.codec import decode, encode
from schemas.examples import example_journey
from schemas.records import EVENT_CLASSES, DeadLetter
from schemas.settings import ConnectionSettings, StageSettings
from schemas.topics import EVENT_ROLES, TopicCatalog
from tests.kafka_clients import kafka_options

pytestmark = pytest.mark.integration


async def consume(bootstrap: str, topics: list[str], group: str, count: int) -> list[object]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        **kafka_options(),
        group_id=group,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got: list[object] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < count and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(messages)
    finally:
        await consumer.stop()
    return got


def console_produce(bootstrap: str, topic: str, lines: list[str], config: Path) -> None:
    dist = KafkaDistribution.in_cache(StageSettings().cache_dir).fetch()
    cmd = [
        find_java(),
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp",
        dist.classpath,
        "org.apache.kafka.tools.ConsoleProducer",
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--property",
        "parse.key=true",
        "--property",
        "key.separator=\t",
        "--producer.config",  # the session broker's security settings (RECQ_TEST_SECURE=1)
        str(config),
    ]
    proc = subprocess.run(
        cmd, input="".join(line + "\n" for line in lines), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


async def test_console_producer_events_decode(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    config = tmp_path / "client.properties"
    config.write_text(java_client_properties(ConnectionSettings()))
    catalog = TopicCatalog(prefix=f"t{unique}.", partitions=2)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    now = int(time.time() * 1000)
    events = [e for user in ("alice", "bob") for e in example_journey(user, now - 5000)]
    by_topic: dict[str, list[str]] = {}
    for event in events:
        line = f"{event.user_id}\t{encode(event).decode()}"
        by_topic.setdefault(catalog.name(EVENT_ROLES[event.type]), []).append(line)
    # One bad line among them: it must become a dead letter, not stop anything.
    by_topic[catalog.name(EVENT_ROLES["click"])].append('mallory\t{"type": "click", "oops"')

    await asyncio.gather(
        *(
            asyncio.to_thread(console_produce, kafka_bootstrap, t, ls, config)
            for t, ls in by_topic.items()
        )
    )

    messages = await consume(kafka_bootstrap, list(by_topic), f"g{unique}", len(events) + 1)
    decoded = []
    letters = []
    for msg in messages:
        kind = next(k for k, role in EVENT_ROLES.items() if catalog.name(role) == msg.topic)  # type: ignore[attr-defined]
        got = decode(msg.value, EVENT_CLASSES[kind])  # type: ignore[attr-defined]
        (letters if isinstance(got, DeadLetter) else decoded).append(got)
    assert sorted(decoded, key=lambda e: e.event_id) == sorted(events, key=lambda e: e.event_id)
    assert [letter.code for letter in letters] == ["malformed_json"]
    assert letters[0].original == b'{"type": "click", "oops"'
    # Keys were parsed, so co-partitioning by user_id holds for console-produced events.
    assert {msg.key for msg in messages} == {b"alice", b"bob", b"mallory"}  # type: ignore[attr-defined]
