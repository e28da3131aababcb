"""The broker killed (kill -9) mid-stream and restarted on the same data and address; the
worker, the learner and a serving member (processes) are not restarted.

Counted: the committed transitions equal the scripted log's expected multiset (0 lost,
0 duplicated, exactly-once across the broker's crash); every request whose send the
broker acknowledged is answered (duplicates counted and reported); the learner announces
a snapshot trained after the restart; no stage exited."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from recq.embedded_kafka import EmbeddedKafka
from recq.processes import StageProcess
from recq.topics import ensure_topics
from schemas.codec import decode
from schemas.records import SnapshotAnnouncement
from schemas.settings import StageSettings
from schemas.topics import TopicCatalog, TopicRole
from tests.kafka_clients import kafka_options
from tests.reliability.load_harness import (
    Requests,
    exited,
    stage_envs,
    start_stages,
    stop_all,
    tails,
)
from tests.streams_harness import (
    actual_multiset,
    assert_same_transitions,
    expected_transitions,
    produce,
    read_committed,
    scripted_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

DOWN_S = 3.0
REQUEST_RATE = 20  # per second, all through the outage


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[EmbeddedKafka, dict[str, str]]]:
    """A broker of this test's own (the session's must not be killed); secured like the
    session's under RECQ_TEST_SECURE=1. Its clients' settings go into the environment
    for the test's duration (the test's own clients and its stages read them there)."""
    broker = EmbeddedKafka(tmp_path / "kafka", cache_dir=StageSettings().cache_dir,
                           secure=os.environ.get("RECQ_TEST_SECURE") == "1")  # fmt: skip
    state = broker.start()
    env = broker.client_env(state.bootstrap_servers) if broker.secure else {}
    env.pop("RECQ_BOOTSTRAP_SERVERS", None)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield broker, {"bootstrap": state.bootstrap_servers}
    finally:
        broker.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def last_snapshot_after(consumer: AIOKafkaConsumer, since_ms: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for messages in (await consumer.getmany(timeout_ms=500)).values():
            for m in messages:
                a = decode(m.value, SnapshotAnnouncement)
                if isinstance(a, SnapshotAnnouncement) and a.created_ts_ms > since_ms:
                    return a.version
    return 0


@pytest.mark.extended  # ~80 s with its own broker: `make reliability`
@pytest.mark.timeout(600)
async def test_broker_killed_and_restarted_mid_stream_the_stages_carry_on(
    own_broker: tuple[EmbeddedKafka, dict[str, str]], unique: str, tmp_path: Path
) -> None:
    broker, info = own_broker
    bootstrap = info["bootstrap"]
    prefix = f"b{unique}."
    catalog = TopicCatalog(prefix=prefix, partitions=4)
    options = kafka_options()
    await ensure_topics(catalog, bootstrap_servers=bootstrap, client_options=options)
    log = scripted_log(users=300, events_per_user=25, seed=31)
    expected = expected_transitions(log)
    want = sum(expected.values())
    envs = stage_envs(bootstrap, prefix, tmp_path)
    stages: dict[str, StageProcess] = {}
    requests = Requests(bootstrap, catalog, rate=REQUEST_RATE)
    snapshots = AIOKafkaConsumer(catalog.name(TopicRole.SNAPSHOTS), bootstrap_servers=bootstrap,
                                 auto_offset_reset="earliest", **options)  # fmt: skip
    logs = ""
    try:
        stages = start_stages(envs, tmp_path)
        await requests.start()
        await snapshots.start()
        await produce(bootstrap, catalog, log)

        # Mid-stream: the worker has committed some of the transitions, not all.
        deadline = time.monotonic() + 180
        seen = 0
        while time.monotonic() < deadline and seen < want // 4:
            seen = len((await read_committed(bootstrap, catalog, want=0, timeout_s=1,
                                             settle_s=0)).transitions)  # fmt: skip
            await asyncio.sleep(0.5)
        assert 0 < seen < want, f"not mid-stream: {seen} of {want}\n{stages['worker'].log_tail()}"

        broker.kill()
        await asyncio.sleep(DOWN_S)
        restarted = await asyncio.to_thread(broker.start)
        assert restarted.bootstrap_servers == bootstrap  # the same address, same data
        restarted_ms = int(time.time() * 1000)

        got = await read_committed(bootstrap, catalog, want=want, timeout_s=300, settle_s=8)
        version = await last_snapshot_after(snapshots, restarted_ms, timeout_s=120)
        await asyncio.sleep(5)
        await requests.stop_sending()
        missing = await requests.all_answered(120)
        gone = exited(stages)
        logs = tails(stages, 40)
    finally:
        stop_all(stages)
        await requests.close()
        await snapshots.stop()

    actual = await actual_multiset(bootstrap, catalog, got.transitions)
    twice = requests.twice()
    print(f"broker down {DOWN_S:.0f} s at {seen} of {want} transitions; requests: "
          f"{len(requests.acked)} acknowledged, {len(requests.failed)} not, "
          f"{len(missing)} unanswered, {twice} answered twice; snapshot after restart: "
          f"{version}")  # fmt: skip
    assert not gone, f"stages exited: {gone}\n{logs}"
    assert_same_transitions(expected, actual, f"broker killed at {seen}; ", logs)
    assert not missing, f"{len(missing)} requests never answered: {missing[:10]}\n{logs}"
    assert version > 0, f"no snapshot announced after the restart\n{logs}"
