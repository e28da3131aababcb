"""The broker killed (kill -9) mid-stream and restarted on the same data and address; the
worker, the learner and a serving member (processes) are not restarted.

Counted: the committed transitions equal the scripted log's expected multiset (0 lost,
0 duplicated, exactly-once across the broker's crash); every request whose send the
broker acknowledged is answered (duplicates counted and reported); the learner announces
a snapshot trained after the restart; no stage exited."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from recq.embedded_kafka import EmbeddedKafka
from recq.processes import StageProcess, recq_command
from recq.topics import ensure_topics
from schemas.codec import decode, encode
from schemas.connection import client_options
from schemas.records import Recommendation, RecRequest, SnapshotAnnouncement
from schemas.settings import ConnectionSettings, StageSettings, stage_env
from schemas.topics import TopicCatalog, TopicRole
from tests.streams_harness import (
    WorkerProcess,
    actual_multiset,
    assert_same_transitions,
    expected_transitions,
    produce,
    read_committed,
    scripted_log,
    worker_env,
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


def stage_envs(bootstrap: str, prefix: str, root: Path) -> dict[str, dict[str, str]]:
    common = dict(RECQ_BOOTSTRAP_SERVERS=bootstrap, RECQ_TOPIC_PREFIX=prefix,
                  RECQ_PARTITIONS=4, RECQ_BROKER_SESSION_TIMEOUT_S=6)  # fmt: skip
    learner = stage_env(
        **common, RECQ_DATA_DIR=root / "learner", RECQ_MODEL_STORE=root / "models",
        RECQ_HISTORY_LENGTH=4, RECQ_EMBEDDING_DIM=16, RECQ_BATCH_SIZE=32,
        RECQ_WARMUP_TRANSITIONS=64, RECQ_SNAPSHOT_EVERY_UPDATES=100000,
        RECQ_SNAPSHOT_EVERY_S=2, RECQ_SNAPSHOT_MIN_UPDATES=10, RECQ_TENSORBOARD=False,
        RECQ_LEARNER_GROUP_ID=f"{prefix}learner",
        # The scripted log's slates come from another policy than this learner's: the
        # gate would (rightly) keep its snapshots unannounced. Not what is tested here.
        RECQ_GATE="off",
    )  # fmt: skip
    serve = stage_env(**common, RECQ_DATA_DIR=root / "serve", RECQ_MODEL_STORE=root / "models",
                      RECQ_SERVE_GROUP_ID=f"{prefix}serve", RECQ_SERVE_THREADS=1)  # fmt: skip
    for env in (learner, serve):
        env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return {"worker": worker_env(bootstrap, prefix, root / "worker"), "learner": learner,
            "serve": serve}  # fmt: skip


class Requests:
    """Sends requests at a steady rate (through the outage: sends wait for the broker)
    and reads every recommendation."""

    def __init__(self, bootstrap: str, catalog: TopicCatalog) -> None:
        options = client_options(ConnectionSettings())
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                         enable_idempotence=True, linger_ms=0,
                                         request_timeout_ms=60_000, **options)  # fmt: skip
        self.consumer = AIOKafkaConsumer(catalog.name(TopicRole.RECOMMENDATIONS),
                                         bootstrap_servers=bootstrap,
                                         auto_offset_reset="earliest", **options)  # fmt: skip
        self.topic = catalog.name(TopicRole.REC_REQUESTS)
        self.acked: list[str] = []
        self.failed: list[str] = []
        self.answers: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._read())]

    async def _send_one(self, i: int) -> None:
        r = RecRequest(request_id=f"req-{i}", user_id=f"shopper-{i % 200}",
                       ts_ms=int(time.time() * 1000), k=5)  # fmt: skip
        try:
            await self.producer.send_and_wait(self.topic, encode(r), key=r.user_id.encode())
            self.acked.append(r.request_id)
        except Exception:  # the broker never acknowledged it: not counted as sent
            self.failed.append(r.request_id)

    async def _send(self) -> None:
        pending: set[asyncio.Task[None]] = set()
        i = 0
        while not self.stopping.is_set():
            task = asyncio.create_task(self._send_one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            await asyncio.sleep(1 / REQUEST_RATE)
        if pending:
            await asyncio.wait(pending)

    async def _read(self) -> None:
        while True:
            for messages in (await self.consumer.getmany(timeout_ms=200)).values():
                for m in messages:
                    record = decode(m.value, Recommendation)
                    assert isinstance(record, Recommendation), record
                    self.answers[record.request_id] += 1

    async def stop_sending(self) -> None:
        self.stopping.set()
        await self._tasks[0]

    async def close(self) -> None:
        self.stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.producer.stop()
        # aiokafka's fetcher, closed while a fetch that failed during the outage backs
        # off, lets that task's cancellation escape stop().
        with contextlib.suppress(asyncio.CancelledError):
            await self.consumer.stop()


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
    options = client_options(ConnectionSettings())
    await ensure_topics(catalog, bootstrap_servers=bootstrap, client_options=options)
    log = scripted_log(users=300, events_per_user=25, seed=31)
    expected = expected_transitions(log)
    want = sum(expected.values())
    envs = stage_envs(bootstrap, prefix, tmp_path)
    stages = {
        "worker": WorkerProcess(envs["worker"], tmp_path / "worker.log"),
        "learner": StageProcess(envs["learner"], tmp_path / "learner.log",
                                recq_command("learner")),
        "serve": StageProcess(envs["serve"], tmp_path / "serve.log", recq_command("serve")),
    }  # fmt: skip
    requests = Requests(bootstrap, catalog)
    snapshots = AIOKafkaConsumer(catalog.name(TopicRole.SNAPSHOTS), bootstrap_servers=bootstrap,
                                 auto_offset_reset="earliest", **options)  # fmt: skip
    logs = ""
    try:
        for stage in stages.values():
            stage.start()
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
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not set(requests.acked) <= set(requests.answers):  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        exited = {
            n: s.proc.poll() for n, s in stages.items() if s.proc and s.proc.poll() is not None
        }
        logs = "\n".join(f"--- {n}\n{s.log_tail(40)}" for n, s in stages.items())
    finally:
        for stage in stages.values():
            stage.stop(timeout_s=60)
        await requests.close()
        await snapshots.stop()

    actual = await actual_multiset(bootstrap, catalog, got.transitions)
    missing = [r for r in requests.acked if r not in requests.answers]
    twice = sum(1 for r in requests.acked if requests.answers[r] > 1)
    print(f"broker down {DOWN_S:.0f} s at {seen} of {want} transitions; requests: "
          f"{len(requests.acked)} acknowledged, {len(requests.failed)} not, "
          f"{len(missing)} unanswered, {twice} answered twice; snapshot after restart: "
          f"{version}")  # fmt: skip
    assert not exited, f"stages exited: {exited}\n{logs}"
    assert_same_transitions(expected, actual, f"broker killed at {seen}; ", logs)
    assert not missing, f"{len(missing)} requests never answered: {missing[:10]}\n{logs}"
    assert version > 0, f"no snapshot announced after the restart\n{logs}"
