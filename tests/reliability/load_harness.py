"""What the fault scenarios under load share: the three stages as processes, steady
request traffic with every answer counted, paced event production, and the memory of
each process group sampled from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from recq.embedded_kafka import free_port
from recq.processes import StageProcess, recq_command
from schemas.codec import decode, encode
from schemas.records import Recommendation, RecRequest
from schemas.settings import stage_env
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole
from tests.kafka_clients import kafka_options
from tests.streams_harness import LogRecord, WorkerProcess, worker_env

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def stage_envs(
    bootstrap: str, prefix: str, root: Path, **learner: object
) -> dict[str, dict[str, str]]:
    """Worker, learner and serving member environments (small model, fast snapshots;
    the gate off: the scripted slates come from another policy)."""
    common: dict[str, object] = {
        "RECQ_BOOTSTRAP_SERVERS": bootstrap, "RECQ_TOPIC_PREFIX": prefix,
        "RECQ_PARTITIONS": 4, "RECQ_BROKER_SESSION_TIMEOUT_S": 6,
    }  # fmt: skip
    learner_env = stage_env(**{
        **common, "RECQ_DATA_DIR": root / "learner", "RECQ_MODEL_STORE": root / "models",
        "RECQ_HISTORY_LENGTH": 4, "RECQ_EMBEDDING_DIM": 16, "RECQ_BATCH_SIZE": 32,
        "RECQ_WARMUP_TRANSITIONS": 64, "RECQ_SNAPSHOT_EVERY_UPDATES": 100000,
        "RECQ_SNAPSHOT_EVERY_S": 2, "RECQ_SNAPSHOT_MIN_UPDATES": 10, "RECQ_TENSORBOARD": False,
        "RECQ_LEARNER_GROUP_ID": f"{prefix}learner", "RECQ_GATE": "off",
        "RECQ_METRICS_PORT": free_port(), **learner,
    })  # type: ignore[arg-type]  # fmt: skip
    serve_env = stage_env(**{
        **common, "RECQ_DATA_DIR": root / "serve", "RECQ_MODEL_STORE": root / "models",
        "RECQ_SERVE_GROUP_ID": f"{prefix}serve", "RECQ_SERVE_THREADS": 1,
        "RECQ_METRICS_PORT": free_port(),
    })  # type: ignore[arg-type]  # fmt: skip
    for env in (learner_env, serve_env):
        env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    streams = worker_env(bootstrap, prefix, root / "worker", RECQ_METRICS_PORT=str(free_port()))
    return {"worker": streams, "learner": learner_env, "serve": serve_env}


def start_stages(
    envs: dict[str, dict[str, str]],
    root: Path,
    names: tuple[str, ...] = ("worker", "learner", "serve"),
) -> dict[str, StageProcess]:
    stages: dict[str, StageProcess] = {}
    for name in names:
        log = root / f"{name}.log"
        stages[name] = (WorkerProcess(envs[name], log) if name == "worker"
                        else StageProcess(envs[name], log, recq_command(name))).start()  # fmt: skip
    return stages


def exited(stages: dict[str, StageProcess]) -> dict[str, int]:
    """The stages that are no longer running, with their exit codes."""
    return {n: code for n, s in stages.items()
            if s.proc is not None and (code := s.proc.poll()) is not None}  # fmt: skip


def tails(stages: dict[str, StageProcess], lines: int = 30) -> str:
    """Each stage's last log lines, for a failure message."""
    return "\n".join(f"--- {n}\n{s.log_tail(lines)}" for n, s in stages.items())


def stop_all(stages: dict[str, StageProcess]) -> None:
    for stage in stages.values():
        stage.stop(timeout_s=60)


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in the process group (a stage and its children)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:  # field 5: pgrp
                total += int(Path(entry.path, "statm").read_text().split()[1])
    return total * PAGE_MB


class MemorySampler:
    """Peak resident memory per named process group, sampled every ``every_s``."""

    def __init__(self, groups: dict[str, int], every_s: float = 0.5) -> None:
        self.groups = groups
        self.every_s = every_s
        self.peak: dict[str, float] = dict.fromkeys(groups, 0.0)
        self.last: dict[str, float] = dict.fromkeys(groups, 0.0)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for name, pgid in self.groups.items():
                rss = await asyncio.to_thread(group_rss_mb, pgid)
                self.last[name] = rss
                self.peak[name] = max(self.peak[name], rss)
            await asyncio.sleep(self.every_s)

    def start(self) -> MemorySampler:
        self._task = asyncio.create_task(self._run())
        return self

    def reset_peaks(self) -> None:
        self.peak = dict(self.last)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class Requests:
    """Requests at a steady rate (changeable while running; sends wait through an
    outage) and every recommendation read, counted by request id."""

    def __init__(self, bootstrap: str, catalog: TopicCatalog, rate: float) -> None:
        options = kafka_options()
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                         enable_idempotence=True, linger_ms=0,
                                         request_timeout_ms=60_000, **options)  # fmt: skip
        self.consumer = AIOKafkaConsumer(catalog.name(TopicRole.RECOMMENDATIONS),
                                         bootstrap_servers=bootstrap,
                                         auto_offset_reset="earliest", **options)  # fmt: skip
        self.topic = catalog.name(TopicRole.REC_REQUESTS)
        self.rate = rate
        self.acked: list[str] = []
        self.failed: list[str] = []
        self.sent_ms: dict[str, int] = {}
        self.latency_ms: dict[str, int] = {}
        self.answers: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()

    async def start(self) -> Requests:
        await self.producer.start()
        await self.consumer.start()
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._read())]
        return self

    async def _send_one(self, i: int) -> None:
        now = int(time.time() * 1000)
        r = RecRequest(request_id=f"req-{i}", user_id=f"shopper-{i % 200}", ts_ms=now, k=5)
        self.sent_ms[r.request_id] = now
        try:
            await self.producer.send_and_wait(self.topic, encode(r), key=r.user_id.encode())
            self.acked.append(r.request_id)
        except Exception:  # the broker never acknowledged it: not counted as sent
            self.failed.append(r.request_id)

    async def _send(self) -> None:
        pending: set[asyncio.Task[None]] = set()
        i = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            task = asyncio.create_task(self._send_one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            next_at += 1 / self.rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.wait(pending)

    async def _read(self) -> None:
        while True:
            for messages in (await self.consumer.getmany(timeout_ms=200)).values():
                now = int(time.time() * 1000)
                for m in messages:
                    record = decode(m.value, Recommendation)
                    assert isinstance(record, Recommendation), record
                    self.answers[record.request_id] += 1
                    sent = self.sent_ms.get(record.request_id)
                    if sent is not None and record.request_id not in self.latency_ms:
                        self.latency_ms[record.request_id] = now - sent

    async def stop_sending(self) -> None:
        self.stopping.set()
        await self._tasks[0]

    async def all_answered(self, timeout_s: float) -> list[str]:
        """Wait for every acknowledged request's answer; returns the unanswered ones."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not set(self.acked) <= set(self.answers):  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        return [r for r in self.acked if r not in self.answers]

    def twice(self) -> int:
        return sum(1 for r in self.acked if self.answers[r] > 1)

    def latency_p99_ms(self, ids: list[str]) -> float:
        values = sorted(self.latency_ms[r] for r in ids if r in self.latency_ms)
        return float(values[int(0.99 * (len(values) - 1))]) if values else float("nan")

    async def close(self) -> None:
        self.stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.producer.stop()
        # aiokafka's fetcher, closed while a fetch that failed during an outage backs
        # off, lets that task's cancellation escape stop().
        with contextlib.suppress(asyncio.CancelledError):
            await self.consumer.stop()


async def produce_paced(bootstrap: str, catalog: TopicCatalog, log: list[LogRecord],
                        rate: float) -> None:  # fmt: skip
    """The log in order at ``rate`` records per second (a shopper's records come
    together, as the scripted log lists them)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                linger_ms=5, **kafka_options())  # fmt: skip
    await producer.start()
    try:
        start = time.monotonic()
        for n, record in enumerate(log):
            role = (TopicRole.RECOMMENDATIONS if isinstance(record, Recommendation)
                    else EVENT_ROLES[record.type])  # fmt: skip
            await producer.send(catalog.name(role), encode(record), key=record.user_id.encode())
            if n % 50 == 0:
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()


async def group_lag(bootstrap: str, group: str, topic: str) -> int | None:
    """Committed records of ``topic`` a consumer group has not committed past yet, from
    the broker's view (the group's committed offsets against the last stable offsets):
    unlike a stage's own gauge it does not go stale while the stage is stopped. None
    before the group has committed anything."""
    options = kafka_options()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    tps = [tp for tp in committed if tp.topic == topic]
    if not tps:
        return None
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                **options)  # fmt: skip
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return sum(max(0, ends[tp] - committed[tp].offset) for tp in tps)


async def wait_for_group_caught_up(
    bootstrap: str, group: str, topic: str, timeout_s: float
) -> float | None:
    """Seconds until the group has committed up to the topic's end (None: not in time)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if await group_lag(bootstrap, group, topic) == 0:
            return time.monotonic() - start
        await asyncio.sleep(1.0)
    return None
