"""kill -9 the learner (`recq learner`, a process) again and again, at random moments of
its work: while it trains, checkpoints, exports, writes or announces a snapshot (with a
snapshot every 10 updates, most of its time goes to snapshots). After every kill:

Every other kill is aimed at a snapshot write (the moment its temp directory appears).

- every snapshot a reader can see in the store verifies (manifest, sha256 of each file):
  a kill mid-write leaves at most a hidden temp directory, which the next start removes;
- the checkpoint on disk loads (written through a temp file and a rename).

Across all lives, announced snapshot versions strictly increase; each restarted learner
resumes from the checkpoint (its first snapshot's step is past the checkpoint's updates)
and refills its replay store from the transitions topic (the snapshot's manifest counts
every organic and slate transition produced)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from inference.registry import SnapshotRegistry
from kafkaio.vocabulary import ItemVocabulary
from learner import checkpoint
from recq.processes import StageProcess, recq_command
from recq.topics import ensure_topics
from schemas.codec import decode, encode
from schemas.model_store import ModelStore
from schemas.records import SnapshotAnnouncement
from schemas.settings import stage_env
from schemas.topics import TopicCatalog, TopicRole
from tests.integration.test_learner import next_announcement
from tests.kafka_clients import kafka_options
from tests.learner.helpers import transition
from tests.learner.test_slateq import slate

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ITEMS = [f"sku-{n}" for n in range(30)]
ORGANIC, SLATES = 400, 60
KILLS = 5
LIFE_TIMEOUT_S = 120.0  # a restarted learner: imports, refill, warm-up, first snapshot


def learner_env(bootstrap: str, prefix: str, data_dir: Path) -> dict[str, str]:
    env = stage_env(
        RECQ_BOOTSTRAP_SERVERS=bootstrap, RECQ_TOPIC_PREFIX=prefix, RECQ_PARTITIONS=2,
        RECQ_DATA_DIR=data_dir, RECQ_HISTORY_LENGTH=4, RECQ_EMBEDDING_DIM=16,
        RECQ_BATCH_SIZE=16, RECQ_SLATE_BATCH_SIZE=16, RECQ_REPLAY_CAPACITY=1000,
        RECQ_WARMUP_TRANSITIONS=32, RECQ_SNAPSHOT_EVERY_UPDATES=10,
        RECQ_SNAPSHOT_EVERY_S=3600, RECQ_SNAPSHOT_MIN_UPDATES=0, RECQ_SNAPSHOTS_KEEP=3,
        RECQ_CHECKPOINT_EVERY_S=1, RECQ_TENSORBOARD=False,
        RECQ_LEARNER_GROUP_ID=f"learner-{prefix}",
    )  # fmt: skip
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


async def produce_transitions(bootstrap: str, catalog: TopicCatalog) -> None:
    async with ItemVocabulary(topic=catalog.name(TopicRole.ITEM_VOCABULARY),
                              bootstrap_servers=bootstrap,
                              client_options=kafka_options()) as vocabulary:  # fmt: skip
        assert await vocabulary.indices(ITEMS) == list(range(30))
    topic = catalog.name(TopicRole.TRANSITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **kafka_options())
    await producer.start()
    try:
        for i in range(ORGANIC):
            t = transition(f"user-{i % 12}", i // 12, i % 30, 1.0 if i % 30 == 7 else 0.1,
                           state=((i + 3) % 30,), done=i % 5 == 0)  # fmt: skip
            await producer.send(topic, encode(t), key=t.user_id.encode())
        for i in range(SLATES):
            items = [i % 30, (i + 1) % 30, (i + 2) % 30]
            s = slate(items, [0, i % 2, 0], [0.0, 0.2 * (i % 2), 0.0], state=((i + 5) % 30,))
            await producer.send(topic, encode(s), key=b"user-0")
        await producer.flush()
    finally:
        await producer.stop()


async def drain(consumer: AIOKafkaConsumer) -> list[SnapshotAnnouncement]:
    """Every announcement up to the topic's end now."""
    ends = await consumer.end_offsets(list(consumer.assignment()))
    out: list[SnapshotAnnouncement] = []
    while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
        for messages in (await consumer.getmany(timeout_ms=500)).values():
            for m in messages:
                record = decode(m.value, SnapshotAnnouncement)
                assert isinstance(record, SnapshotAnnouncement), record
                out.append(record)
    return out


def kill_when_writing(learner: StageProcess, store_dir: Path, timeout_s: float) -> None:
    """SIGKILL the learner as soon as a snapshot's temp directory shows in the store
    (polled every 0.2 ms: the write takes a few milliseconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with os.scandir(store_dir) as entries:
            if any(e.name.startswith(".tmp-") for e in entries):
                break
        time.sleep(0.0002)
    learner.kill()


def visible_snapshots_verify(store_dir: Path) -> list[int]:
    """What a serving member would see now: every listed version must verify."""
    store, registry = ModelStore(store_dir), SnapshotRegistry(store_dir)
    versions = store.versions()
    for version in versions:
        registry.verify(store.path(version).name)  # raises SnapshotRejected if partial
    return versions


@pytest.mark.extended  # 64 s, the longest in `make test`: `make reliability` keeps it
async def test_learner_killed_at_random_moments_resumes_and_never_shows_a_partial_snapshot(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"lk{unique}."
    catalog = TopicCatalog(prefix=prefix, partitions=2)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    await produce_transitions(kafka_bootstrap, catalog)
    env = learner_env(kafka_bootstrap, prefix, tmp_path / "data")
    store_dir = tmp_path / "data" / "models"
    ckpt_path = tmp_path / "data" / "learner" / checkpoint.CHECKPOINT_FILE
    rng = random.Random(14)

    snapshots = AIOKafkaConsumer(
        catalog.name(TopicRole.SNAPSHOTS), bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest", **kafka_options(),
    )  # fmt: skip
    await snapshots.start()
    announced: list[SnapshotAnnouncement] = []
    kills_mid_write = 0
    learner: StageProcess | None = None
    try:
        saved: checkpoint.Checkpoint | None = None
        full = 0.0
        for life in range(KILLS + 1):
            learner = StageProcess(env, tmp_path / f"learner-{life}.log",
                                   recq_command("learner")).start()  # fmt: skip
            try:
                first = await next_announcement(snapshots, LIFE_TIMEOUT_S)
            except TimeoutError:
                pytest.fail(f"life {life}: no snapshot in {LIFE_TIMEOUT_S} s\n"
                            f"{learner.log_tail()}")  # fmt: skip
            announced.append(first)
            if saved is not None:  # resumed from the checkpoint the kill left
                assert first.step > saved.updates, (life, first, saved)
                # Training starts while the refill is under way: a later snapshot of this
                # life holds every transition produced again.
                latest = first
                while latest.metrics.get("replay/size") != full:
                    latest = await next_announcement(snapshots, LIFE_TIMEOUT_S)
                    announced.append(latest)
                assert latest.metrics["replay/slates"] == SLATES, latest.metrics
            if life == 0:
                # The replay store once everything is read: transitions whose n-step
                # window is still open (a shopper's last few) are held back, not stored.
                await asyncio.sleep(3.0)
                announced += await drain(snapshots)
                latest = await next_announcement(snapshots, LIFE_TIMEOUT_S)
                full = latest.metrics["replay/size"]
                assert latest.metrics["replay/slates"] == SLATES, latest.metrics
                assert 0.9 * ORGANIC <= full <= ORGANIC, latest.metrics
                announced.append(latest)
            if life == KILLS:
                learner.stop(timeout_s=60)
                break
            if life % 2:  # aim at a write: kill the moment a temp directory appears
                kill_when_writing(learner, store_dir, timeout_s=30)
            else:  # anywhere: training, checkpointing, exporting, writing, announcing
                await asyncio.sleep(rng.uniform(0.0, 2.5))
                learner.kill()
            # What the kill left: a temp directory if it struck mid-write, never a
            # partial snapshot under a version name.
            kills_mid_write += any(p.name.startswith(".tmp-") for p in store_dir.iterdir())
            visible_snapshots_verify(store_dir)
            saved = checkpoint.peek(ckpt_path)
            assert saved is not None and saved.updates > 0, f"life {life}: no checkpoint"
            announced += await drain(snapshots)  # what the killed life announced last
    finally:
        if learner is not None:
            learner.kill()
        await snapshots.stop()

    versions = [a.version for a in announced]
    assert versions == sorted(set(versions)), f"announced versions not increasing: {versions}"
    # The next start removed what a mid-write kill left.
    assert not [p for p in store_dir.iterdir() if p.name.startswith(".tmp-")]
    print(f"{KILLS} kills, {kills_mid_write} of them mid-write; {len(versions)} snapshots "
          f"announced, versions {versions[0]}..{versions[-1]}")  # fmt: skip
    assert kills_mid_write >= 1, "no kill struck a snapshot write"
