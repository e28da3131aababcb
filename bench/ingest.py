"""Streams ingest throughput: events/s through one `recq worker` (exactly-once, one
process) and the worker's CPU time per event (user + system of its process, all threads:
a figure that does not depend on what else shares the cores), and in the same run on the
same broker and events: a raw aiokafka consume + decode loop, the smallest Faust pipeline
with the same guarantee (consume, forward: `faust_forward`) and a Faust agent that does
nothing with each event (`faust_noop`: the ceiling of anything built on Faust's stream
here). Prints JSON lines (bench/report.py). Run from the repo root after `make test`:

    .venv/bin/python bench/ingest.py [--events 60000] [--before REV] [--profile DIR]

Events/s are timed by the consumer group's commits (from its first commit to the one
covering every event); `--before REV` also runs the worker of an older revision on the
same events (baseline `worker_before:REV`). The workload's items are claimed in the
vocabulary first (`--cold-vocabulary` skips it).

Starts the embedded broker unless RECQ_BOOTSTRAP_SERVERS is set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from bench.workload import make_events
from kafkaio.vocabulary import ItemVocabulary
from recq.embedded_kafka import EmbeddedKafka
from recq.processes import StageProcess
from recq.topics import ensure_topics
from schemas import transition_batch
from schemas.codec import decode
from schemas.records import EVENT_CLASSES
from schemas.settings import StageSettings
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole
from tests.streams_harness import WorkerProcess, worker_env

PARTITIONS = 4
#: Compute threads of the processes measured (torch/numpy are not on this path; said in
#: the output as the benches do).
OMP_THREADS = os.environ.get("OMP_NUM_THREADS", "unset")


@contextlib.contextmanager
def broker() -> Iterator[str]:
    external = os.environ.get("RECQ_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="recq-bench-") as tmp:
        kafka = EmbeddedKafka(Path(tmp), cache_dir=StageSettings().cache_dir)
        try:
            yield kafka.start().bootstrap_servers
        finally:
            kafka.stop()


async def produce(
    bootstrap: str, catalog: TopicCatalog, events: list[tuple[str, bytes, bytes]]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        for kind, key, value in events:
            await producer.send(catalog.name(EVENT_ROLES[kind]), value, key=key)  # type: ignore[index]
        await producer.flush()
    finally:
        await producer.stop()


async def raw_loop(bootstrap: str, catalog: TopicCatalog, n: int) -> float:
    """Baseline: consume the three event topics and decode every event; events/s."""
    topics = {catalog.name(role): kind for kind, role in EVENT_ROLES.items()}
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    seen, first = 0, 0.0
    try:
        while seen < n:
            for tp, messages in (await consumer.getmany(timeout_ms=1000, max_records=5000)).items():
                if not first:
                    first = time.perf_counter()
                cls = EVENT_CLASSES[topics[tp.topic]]
                for m in messages:
                    decode(m.value, cls)
                seen += len(messages)
        return n / (time.perf_counter() - first)
    finally:
        await consumer.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Rate:
    events_per_s: float
    cpu_us_per_event: float


async def committed_rate(
    bootstrap: str, group: str, inputs: list[TopicPartition], n: int, proc: StageProcess
) -> Rate:
    """events/s as the group commits them (exactly once, a commit covers the outputs of
    the events it commits): from the group's first commit to the one that covers all ``n``
    inputs, polled every 50 ms; and the process's CPU between those two moments per event
    committed in between. (Timing the outputs instead, as this bench did before issue 24,
    timed the worker's idle closing too: the last transition of every session waits
    RECQ_SESSION_TIMEOUT_S after the backlog is read.)"""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    assert proc.proc is not None
    first: tuple[float, int, float] | None = None
    deadline = time.monotonic() + 900
    try:
        while True:
            offsets = await admin.list_consumer_group_offsets(group, partitions=inputs)
            done = sum(max(meta.offset, 0) for meta in offsets.values())
            now, cpu = time.perf_counter(), cpu_seconds(proc.proc.pid)
            if first is None and done > 0:
                first = (now, done, cpu)
            if done >= n:
                break
            if time.monotonic() > deadline or proc.proc.poll() is not None:
                raise RuntimeError(f"{group} committed {done} of {n}\n{proc.log_tail()}")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    assert first is not None
    t0, done0, cpu0 = first
    if done0 >= n:
        raise RuntimeError(f"{group} committed all {n} events at once: run with more --events")
    return Rate((n - done0) / (now - t0), (cpu - cpu0) / (n - done0) * 1e6)


async def wait_for_outputs(bootstrap: str, topic: str, expect: int, proc: StageProcess) -> None:
    """Every expected output is committed (the worker's last transitions wait for its
    sessions to idle out): a run that lost some measures nothing."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        isolation_level="read_committed", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    seen = 0
    deadline = time.monotonic() + 300
    try:
        while seen < expect and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                # Outputs, not messages: a worker's transition_batch message holds many.
                seen += sum(transition_batch.count(m.value) for m in messages)
    finally:
        await consumer.stop()
    if seen < expect:
        raise RuntimeError(f"only {seen} of {expect} outputs from {topic}\n{proc.log_tail()}")


async def warm_vocabulary(
    bootstrap: str, catalog: TopicCatalog, events: list[tuple[str, bytes, bytes]]
) -> None:
    """Claim every item of the workload first: a shop's catalog is known before its
    events, and every worker measured here meets the same vocabulary. (A cold one makes
    each event with an unseen item wait for a claim's round trip: --cold-vocabulary.)"""
    items: set[str] = set()
    for _, _, value in events:
        record = orjson.loads(value)
        items.update([line["item_id"] for line in record["items"]] if "items" in record
                     else [record["item_id"]])  # fmt: skip
    async with ItemVocabulary(topic=catalog.name(TopicRole.ITEM_VOCABULARY),
                              bootstrap_servers=bootstrap) as vocabulary:  # fmt: skip
        await vocabulary.indices(sorted(items))


def input_partitions(catalog: TopicCatalog) -> list[TopicPartition]:
    return [TopicPartition(catalog.name(role), p)
            for role in EVENT_ROLES.values() for p in range(PARTITIONS)]  # fmt: skip


async def faust_noop_rate(
    bootstrap: str, catalog: TopicCatalog, n: int, workdir: Path, guarantee: str
) -> Rate:
    """Baseline: a Faust agent that reads every event and does nothing (its own figures:
    it has no output to time)."""
    result = workdir / "noop.json"
    env = dict(
        os.environ, BENCH_BOOTSTRAP=bootstrap, BENCH_PREFIX=catalog.prefix,
        BENCH_GUARANTEE=guarantee, BENCH_DATADIR=str(workdir / "noop-data"),
        BENCH_MODE="noop", BENCH_EXPECT=str(n), BENCH_RESULT=str(result), PYTHONUNBUFFERED="1",
    )  # fmt: skip
    script = Path(__file__).with_name("faust_forward.py")
    proc = WorkerProcess(env, workdir / "noop.log", [sys.executable, str(script), "worker"])
    proc.start()
    try:
        deadline = time.monotonic() + 900
        while not result.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the no-op agent did not see {n} events\n{proc.log_tail()}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(0.2)  # written in one call; let it land
        figures = orjson.loads(result.read_bytes())
    finally:
        proc.stop()
    events = max(figures["events"], 1)  # first to last: n - 1 events after the first
    return Rate(events / figures["seconds"], figures["cpu_s"] / events * 1e6)


async def faust_forward_rate(
    bootstrap: str, catalog: TopicCatalog, n: int, workdir: Path, guarantee: str,
    forward_settings: list[tuple[str, str]],
) -> Rate:  # fmt: skip
    """Baseline: the smallest Faust pipeline (consume, forward) on the same events."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{catalog.prefix}forwarded", PARTITIONS, 1)])
    finally:
        await admin.close()
    env = dict(
        os.environ, BENCH_BOOTSTRAP=bootstrap, BENCH_PREFIX=catalog.prefix,
        BENCH_GUARANTEE=guarantee, BENCH_DATADIR=str(workdir / "forward-data"),
        PYTHONUNBUFFERED="1", **dict(forward_settings),
    )  # fmt: skip
    script = Path(__file__).with_name("faust_forward.py")
    proc = WorkerProcess(env, workdir / "forward.log", [sys.executable, str(script), "worker"])
    proc.start()
    try:
        rate = await committed_rate(bootstrap, f"{catalog.prefix}faust-forward",
                                    input_partitions(catalog), n, proc)  # fmt: skip
        await wait_for_outputs(bootstrap, f"{catalog.prefix}forwarded", n, proc)
        return rate
    finally:
        proc.stop()


async def worker_rate(
    bootstrap: str, catalog: TopicCatalog, n: int, expect: int, workdir: Path, guarantee: str,
    worker_settings: list[tuple[str, str]], profile: Path | None = None,
    root: Path | None = None,
) -> Rate:  # fmt: skip
    """events/s through one worker (committed), then a check that it wrote every
    transition. ``root``: run the worker of that checkout (``--before``)."""
    group = f"{catalog.prefix}{guarantee}{'-before' if root else ''}"
    env = worker_env(
        bootstrap, catalog.prefix, workdir / (group + "-data"),
        RECQ_SESSION_TICK_S="1", RECQ_PROCESSING_GUARANTEE=guarantee,
        RECQ_STREAMS_APP_ID=group, **dict(worker_settings),
    )  # fmt: skip
    cmd = None
    if root is not None:  # the same interpreter and libraries, that checkout's code
        env["PYTHONPATH"] = str(root)
        cmd = [sys.executable, "-c", "from recq.cli import main; main()", "worker", "-l", "info"]
    worker = WorkerProcess(env, workdir / f"{group}.log", cmd).start()
    assert worker.proc is not None
    spy = None if profile is None else start_py_spy(worker.proc.pid, profile)
    try:
        rate = await committed_rate(bootstrap, group, input_partitions(catalog), n, worker)
        if root is None:  # the transitions topic is shared: the check runs once
            await wait_for_outputs(bootstrap, catalog.name(TopicRole.TRANSITIONS), expect,
                                   worker)  # fmt: skip
        return rate
    finally:
        worker.stop()
        if spy is not None:
            spy.wait(timeout=60)


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A detached git worktree of ``rev`` (the worker before a change), removed after."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="recq-before-") as tmp:
        path = Path(tmp) / "recq"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(path), rev],
                       check=True, capture_output=True)  # fmt: skip
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)],
                           check=False, capture_output=True)  # fmt: skip


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` until it exits (the profile is written then)."""
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
         "--nonblocking", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def top_of_profile(path: Path, lines: int = 15) -> list[tuple[float, float, str]]:
    """py-spy's raw (collapsed) stacks, by function (line numbers dropped): the share of
    samples spent in it (self) and under it (inclusive), the top ``lines`` by self."""
    own: dict[str, int] = {}
    under: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for frame in set(frames):
            under[frame] = under.get(frame, 0) + int(count)
        total += int(count)
    ranked = sorted(own.items(), key=lambda kv: -kv[1])[:lines]
    return [(round(100 * c / max(total, 1), 1), round(100 * under[f] / max(total, 1), 1), f)
            for f, c in ranked]  # fmt: skip


async def run(args: argparse.Namespace, bootstrap: str, before: Path | None) -> None:
    events, interactions = make_events(args.events, args.users, args.items)
    with tempfile.TemporaryDirectory() as tmp:
        catalog = TopicCatalog(prefix=f"bench{uuid.uuid4().hex[:6]}.", partitions=PARTITIONS)
        await ensure_topics(catalog, bootstrap_servers=bootstrap)
        await produce(bootstrap, catalog, events)
        baseline = await raw_loop(bootstrap, catalog, len(events))
        if not args.cold_vocabulary:
            await warm_vocabulary(bootstrap, catalog, events)
        profile = args.profile / "worker-profile.txt" if args.profile else None
        rate = await worker_rate(
            bootstrap, catalog, len(events), interactions, Path(tmp), args.guarantee,
            args.worker_env, profile,
        )  # fmt: skip
        old = None
        if before is not None:  # after the worker above: the vocabulary is as warm for it
            old = await worker_rate(bootstrap, catalog, len(events), interactions, Path(tmp),
                                    args.guarantee, args.worker_env, root=before)  # fmt: skip
        forward = await faust_forward_rate(
            bootstrap, catalog, len(events), Path(tmp), args.guarantee, args.forward_env
        )
        noop = await faust_noop_rate(bootstrap, catalog, len(events), Path(tmp), args.guarantee)
    common = {"events": len(events), "partitions": PARTITIONS, "guarantee": args.guarantee,
              "worker_settings": dict(args.worker_env),
              "forward_settings": dict(args.forward_env), "omp_threads": OMP_THREADS}  # fmt: skip
    baselines: list[tuple[str, Rate | None, float]] = [
        ("raw_aiokafka", None, baseline),
        ("faust_forward", forward, forward.events_per_s),
        ("faust_noop", noop, noop.events_per_s),
    ]
    if old is not None:
        baselines.append((f"worker_before:{args.before}", old, old.events_per_s))
    for name, _, value in baselines:
        figure("ingest", "events_per_s", rate.events_per_s, "1/s", baseline=name,
               baseline_value=value, digits=1, **common)  # fmt: skip
    if profile is not None:
        print(f"worker profile (py-spy; % of samples in / under each function): {profile}")
        for share, inclusive, frame in top_of_profile(profile):
            print(f"  {share:5.1f}% {inclusive:5.1f}%  {frame}")
    for name, other, _ in baselines:
        if other is not None:
            figure("ingest", "worker_cpu_us_per_event", rate.cpu_us_per_event, "us",
                   baseline=name, baseline_value=other.cpu_us_per_event, digits=1,
                   **common)  # fmt: skip


def setting(text: str) -> tuple[str, str]:
    """NAME=VALUE from the command line."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--users", type=int, default=3_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--worker-env", action="append", default=[], metavar="RECQ_X=VALUE",
                        type=setting,
                        help="a setting for the measured worker (repeatable)")  # fmt: skip
    parser.add_argument("--forward-env", action="append", default=[], metavar="BENCH_X=VALUE",
                        type=setting,
                        help="a setting for the faust_forward baseline, e.g. BENCH_TAKE=500 "
                        "(see bench/faust_forward.py)")  # fmt: skip
    parser.add_argument(
        "--guarantee", choices=["exactly_once", "at_least_once"], default="exactly_once"
    )
    parser.add_argument(
        "--cold-vocabulary",
        action="store_true",
        help="do not claim the workload's items before the workers start",
    )
    parser.add_argument("--before", metavar="REV",
                        help="also measure the worker of this git revision (a worktree), "
                        "on the same events and broker: baseline worker_before:REV")  # fmt: skip
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the worker with py-spy (on PATH) into DIR and print "
                        "the top of the profile")  # fmt: skip
    args = parser.parse_args()
    # SIGTERM (`timeout`, Ctrl-C in some runners) unwinds like an exception, so the worker
    # subprocesses started here are stopped by their `finally` and not left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The embedded broker starts outside the event loop (its readiness probe runs its own).
    with broker() as bootstrap, contextlib.ExitStack() as stack:
        before = stack.enter_context(checkout(args.before)) if args.before else None
        asyncio.run(run(args, bootstrap, before))


if __name__ == "__main__":
    main()
