"""The learner on the real broker: transitions in, a verified snapshot written and
announced, invalid transitions dead-lettered, and a restart resuming from the checkpoint."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kafkaio.vocabulary import ItemVocabulary
from learner import checkpoint
from learner.service import run_learner
from recq.topics import ensure_topics
from schemas.codec import decode, encode
from schemas.manifest import MODEL_FILE, VOCABULARY_FILE
from schemas.model_store import ModelStore
from schemas.records import CatalogItem, DeadLetter, SnapshotAnnouncement
from schemas.settings import LearnerSettings, load_settings
from schemas.topics import TopicCatalog, TopicRole
from tests.kafka_clients import kafka_options
from tests.learner.helpers import transition
from tests.learner.test_slateq import slate

pytestmark = pytest.mark.integration

ITEMS = [f"sku-{n}" for n in range(30)]


def learner_settings(bootstrap: str, prefix: str, data_dir: Path) -> LearnerSettings:
    return load_settings(
        LearnerSettings,
        bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=2, data_dir=data_dir,
        history_length=4, embedding_dim=16, batch_size=16, replay_capacity=1000,
        warmup_transitions=32, snapshot_every_updates=25, snapshot_every_s=3600,
        snapshot_min_updates=0,
        checkpoint_every_s=3600, tensorboard=False, learner_group_id=f"learner-{prefix}",
    )  # fmt: skip


def earliest_consumer(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, **kafka_options(), auto_offset_reset="earliest"
    )


async def next_announcement(consumer: AIOKafkaConsumer, timeout_s: float) -> SnapshotAnnouncement:
    async def first() -> SnapshotAnnouncement:
        while True:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for m in messages:
                    record = decode(m.value, SnapshotAnnouncement)
                    assert isinstance(record, SnapshotAnnouncement), record
                    return record

    return await asyncio.wait_for(first(), timeout_s)


async def test_transitions_in_snapshot_announced_restart_resumes(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"lrn{unique}."
    settings = learner_settings(kafka_bootstrap, prefix, tmp_path)
    catalog = TopicCatalog(prefix=prefix, partitions=2)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    async with ItemVocabulary(topic=catalog.name(TopicRole.ITEM_VOCABULARY),
                              bootstrap_servers=kafka_bootstrap,
                              client_options=kafka_options()) as vocabulary:  # fmt: skip
        assert await vocabulary.indices(ITEMS) == list(range(30))

    transitions_topic = catalog.name(TopicRole.TRANSITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, **kafka_options(), acks="all")
    await producer.start()
    try:
        for i in range(240):
            t = transition(f"user-{i % 12}", i // 12, i % 30, 1.0 if i % 30 == 7 else 0.1,
                           state=((i + 3) % 30,), done=i % 5 == 0)  # fmt: skip
            await producer.send(transitions_topic, encode(t), key=t.user_id.encode())
        for i in range(60):  # shown slates, every other one answered in slot 1
            items = [i % 30, (i + 1) % 30, (i + 2) % 30]
            s = slate(items, [0, i % 2, 0], [0.0, 0.2 * (i % 2), 0.0], state=((i + 5) % 30,))
            await producer.send(transitions_topic, encode(s), key=b"user-0")
        bad = b'{"record": "transition", "seq": -1}'
        await producer.send_and_wait(transitions_topic, bad, key=b"user-0")
        # The catalog describes two items nobody has touched, and one record is bad.
        catalog_topic = catalog.name(TopicRole.CATALOG)
        now = int(time.time() * 1000)
        for item_id, category in (("new-A", "shoes"), ("new-B", "hats")):
            described = CatalogItem(item_id=item_id, category=category, price=25.0, ts_ms=now)
            await producer.send(catalog_topic, encode(described), key=item_id.encode())
        bad_item = b'{"item_id": "new-C", "price": "free", "ts_ms": %d}' % now
        await producer.send_and_wait(catalog_topic, bad_item, key=b"new-C")
    finally:
        await producer.stop()

    snapshots = earliest_consumer(kafka_bootstrap, catalog.name(TopicRole.SNAPSHOTS))
    await snapshots.start()
    stopping = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        task = asyncio.create_task(run_learner(settings, kafka_bootstrap, stopping))
        first = await next_announcement(snapshots, 60)
        store = ModelStore(settings.model_store_dir)
        path = settings.model_store_dir / first.path
        assert path.is_dir() and first.version in store.versions()
        assert hashlib.sha256((path / MODEL_FILE).read_bytes()).hexdigest() == first.sha256
        assert orjson.loads((path / VOCABULARY_FILE).read_bytes())["items"][:30] == ITEMS
        manifest = store.manifest(first.version)
        assert manifest.parity.topk_equal == 1.0
        assert manifest.parity.max_abs_diff < 1e-3
        assert manifest.step == first.step >= 25
        assert manifest.metrics["replay/slates"] == 60  # slate transitions reach the learner
        stopping.set()
        await asyncio.wait_for(task, 60)

        saved = checkpoint.peek(settings.learner_dir / checkpoint.CHECKPOINT_FILE)
        assert saved is not None and saved.updates >= first.step
        ends = await _end_offsets(kafka_bootstrap, transitions_topic)
        assert saved.offsets == ends  # every transition (and the bad one) was consumed

        stopping = asyncio.Event()
        task = asyncio.create_task(run_learner(settings, kafka_bootstrap, stopping))
        resumed = await next_announcement(snapshots, 180)
        assert resumed.version > first.version
        assert resumed.step > saved.updates  # training continued from the checkpoint
        # Items only the catalog describes were claimed: every snapshot scores them.
        resumed_items = orjson.loads(
            (settings.model_store_dir / resumed.path / VOCABULARY_FILE).read_bytes()
        )["items"]
        assert resumed_items == [*ITEMS, "new-A", "new-B"]
        stopping.set()
        await asyncio.wait_for(task, 60)
    finally:
        stopping.set()
        if task is not None:
            await asyncio.wait_for(task, 60)
        await snapshots.stop()

    letters = earliest_consumer(kafka_bootstrap, catalog.name(TopicRole.DEAD_LETTER))
    await letters.start()
    try:
        batch = await letters.getmany(timeout_ms=5000)
        records = [DeadLetter.model_validate_json(m.value) for ms in batch.values() for m in ms]
    finally:
        await letters.stop()
    # The restart refilled from the topic and met the bad transition (and re-read the bad
    # catalog record) again, but both had been dead-lettered before: one letter each,
    # original bytes.
    assert sorted((r.original, r.source_topic) for r in records) == sorted(
        [(bad, transitions_topic), (bad_item, catalog_topic)]
    )
    assert {r.source_topic: r.code for r in records}[transitions_topic] == "missing_field"


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_options())
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
            ]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def test_lag_reaches_zero_on_a_topic_written_in_transactions(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """The worker writes transitions in transactions: every commit leaves a marker
    after the last record. The learner's lag must still read 0 once it has read all
    (it counted the marker and stayed at 1 per partition before)."""
    from learner import metrics

    prefix = f"lag{unique}."
    settings = learner_settings(kafka_bootstrap, prefix, tmp_path)
    catalog = TopicCatalog(prefix=prefix, partitions=2)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    topic = catalog.name(TopicRole.TRANSITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"t{unique}",
                                **kafka_options())  # fmt: skip
    await producer.start()
    try:
        for batch in range(3):
            async with producer.transaction():
                for i in range(20):
                    t = transition(f"user-{i % 4}", batch * 20 + i, i % 30, 0.1)
                    await producer.send(topic, encode(t), key=t.user_id.encode())
    finally:
        await producer.stop()

    for p in ("0", "1"):  # the registry is the process's: earlier tests set these
        metrics.CONSUMER_LAG.labels(p).set(-1)
    stopping = asyncio.Event()
    task = asyncio.create_task(run_learner(settings, kafka_bootstrap, stopping))
    try:
        lags: dict[str, float] = {}
        for _ in range(60):  # the feed reports lag at each commit, every 5 s
            await asyncio.sleep(0.5)
            lags = {p: metrics.CONSUMER_LAG.labels(p)._value.get() for p in ("0", "1")}
            if all(v == 0 for v in lags.values()):
                break
        assert lags == {"0": 0, "1": 0}, lags
    finally:
        stopping.set()
        await asyncio.wait_for(task, 60)
