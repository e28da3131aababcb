"""kill -9 the streams worker mid-stream, restart it: the committed transitions equal the
expected multiset exactly, 0 lost and 0 duplicated (exactly-once)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from recq.topics import ensure_topics
from schemas.topics import TopicCatalog, TopicRole
from tests.streams_harness import (
    WorkerProcess,
    actual_multiset,
    expected_transitions,
    produce,
    read_committed,
    scripted_log,
    worker_env,
)

pytestmark = pytest.mark.integration


async def committed_count(bootstrap: str, topic: str) -> int:
    """Transitions visible to a read_committed reader (end offsets include aborted ones)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    count = 0
    try:
        while batches := await consumer.getmany(timeout_ms=300, max_records=5000):
            count += sum(len(messages) for messages in batches.values())
    finally:
        await consumer.stop()
    return count


async def test_kill_9_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    catalog = TopicCatalog(prefix=f"k{unique}.", partitions=4)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap)
    log = scripted_log(users=300, events_per_user=25, seed=11)
    expected = expected_transitions(log)
    want = sum(expected.values())
    await produce(kafka_bootstrap, catalog, log)
    env = worker_env(kafka_bootstrap, catalog.prefix, tmp_path)
    topic = catalog.name(TopicRole.TRANSITIONS)

    first = WorkerProcess(env, tmp_path / "w1.log").start()
    deadline = time.monotonic() + 120
    seen = 0
    try:
        while time.monotonic() < deadline:
            seen = await committed_count(kafka_bootstrap, topic)
            if seen >= want // 10:
                break
            await asyncio.sleep(0.2)
    finally:
        first.kill()  # SIGKILL: no flush, no commit, no leave-group
    assert 0 < seen < want, f"the crash was not mid-stream ({seen} of {want})\n{first.log_tail()}"

    second = WorkerProcess(env, tmp_path / "w2.log").start()
    try:
        got = await read_committed(kafka_bootstrap, catalog, want=want, timeout_s=240, settle_s=5)
    finally:
        second.stop()
    actual = await actual_multiset(kafka_bootstrap, catalog, got.transitions)
    lost, duplicated = expected - actual, actual - expected
    assert not lost and not duplicated, (
        f"killed after {seen} committed; {sum(lost.values())} lost, "
        f"{sum(duplicated.values())} duplicated of {want}\n{second.log_tail()}"
    )
