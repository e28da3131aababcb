"""The Faust app: topics, the sessions Table, the agent and the timers, declared in that
order. ``create_app`` builds it from ``Settings``; ``streams.app`` holds the instance that
``faust -A streams.app worker`` and ``recq worker`` run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any, NoReturn

import faust
from aiokafka import AIOKafkaProducer
from faust.types import StreamT
from prometheus_client import start_http_server

from kafkaio.connection import client_options, quiet_retriable_client_errors, resolve_bootstrap
from kafkaio.vocabulary import ItemVocabulary
from schemas.codec import Limits, Source, encode
from schemas.records import SessionTick
from schemas.settings import StreamsSettings
from schemas.topics import TopicCatalog, TopicRole
from streams import eos, metrics
from streams.assembler import TransitionAssembler
from streams.batch import Batch, ClosedBy
from streams.session import (
    CAUGHT_UP,
    HELD,
    Rules,
    SessionFormatError,
    Sessionizer,
    Sync,
)
from streams.state import SessionCache, WriteThrough

log = logging.getLogger(__name__)
#: Above this many messages of lag, idle ticks wait: the worker is reading a backlog, and
#: a user's next events may sit in it on another topic.
TICK_MAX_LAG = 50


def _credentials(settings: StreamsSettings) -> Any:
    opts = client_options(settings)
    if settings.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=opts["sasl_plain_username"],
            password=opts["sasl_plain_password"],
            mechanism=opts["sasl_mechanism"],
            ssl_context=opts.get("ssl_context"),
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(opts["ssl_context"])
    return None


def handled_lag(highwater: int | None, handled: int | None, committed: int | None) -> int | None:
    """Messages of an input partition the agent has not handled yet (None: unknown).

    Measured from what the agent handled (or, before its first message there, the
    committed offset it resumes from), not from the consumer's position: the consumer
    fetches ahead into faust's buffers, and a partition fetched to its end but not yet
    handled is not caught up. (Counting it so let a shopper's purchase be released while
    the cart before it still sat in a buffer after a restart: issue 14's double kill.)"""
    if highwater is None:
        return None
    if highwater == 0:
        return 0  # an empty partition
    done = max(handled if handled is not None else -1, committed if committed is not None else -1)
    if done < 0:
        return highwater  # nothing handled nor committed: all of it is ahead
    return max(highwater - done, 0)


#: Largest record batch a worker's producers build (below the broker's default
#: message.max.bytes, 1 MiB, which bounds a record batch).
PRODUCER_BATCH_BYTES = 512 * 1024

#: sysexits' EX_CONFIG: the worker cannot run with what it was given; restarting it as is
#: would fail the same way.
EX_CONFIG = 78


def stop_on_unreadable_state(exc: SessionFormatError) -> NoReturn:
    """Stop the process at once with the reason: a session this release cannot read
    would fail on every message of that shopper (a crash loop). Nothing is lost: the
    open transaction is never committed, so its input is read again by the next worker."""
    log.critical("stopping: %s", exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EX_CONFIG)


def end_observed_at(consumer: Any, tp: Any) -> int | None:
    """When (wall-clock ms) the consumer last learned ``tp``'s end offset: aiokafka's time
    of the last fetch response for it (None before the first). faust's ``highwater`` is
    that response's end, which can be seconds old while a partition's fetched records
    wait in buffers; "read to its end" holds only as of this moment."""
    aiokafka_consumer = consumer._thread._ensure_consumer()
    seen_at: int | None = aiokafka_consumer.last_poll_timestamp(tp)
    return seen_at


class StreamsRuntime:
    """What the agent and timers share besides the Table: started on first use, so that
    importing the app (``faust -A``) connects to nothing."""

    def __init__(self, settings: StreamsSettings, bootstrap: str, catalog: TopicCatalog) -> None:
        self.settings = settings
        self.vocabulary = ItemVocabulary(
            topic=catalog.name(TopicRole.ITEM_VOCABULARY),
            bootstrap_servers=bootstrap,
            client_options=client_options(settings),
        )
        self.assembler = TransitionAssembler(
            catalog=catalog,
            sessionizer=Sessionizer(Rules.from_settings(settings)),
            vocabulary=self.vocabulary,
            limits=Limits.from_settings(settings),
        )
        self._bootstrap = bootstrap
        self._ticks: AIOKafkaProducer | None = None
        self._started = False
        self._starting = asyncio.Lock()
        #: Messages behind the source partitions' highwaters (the lag timer updates it;
        #: None until it has run once).
        self.lag: int | None = None
        #: Newest Kafka timestamp read per input (topic, partition), by the agent.
        self.read_until: dict[tuple[str, int], int] = {}
        #: Next offset per input (topic, partition) after the last message the agent
        #: handled: "caught up" means handled to the end, not fetched to it.
        self.handled: dict[tuple[str, int], int] = {}
        #: When the agent last received a message (monotonic; for the starvation warning).
        self.last_message_at = time.monotonic()
        #: Partitions of the transitions topic (known once started).
        self.transition_partitions: int | None = None
        #: Per partition number: how far every input partition of that group has been
        #: read (``streams.session.Sync``). Updated by the lag timer; until then HELD,
        #: which holds releases back (safe, never wrong).
        self.synced: dict[int, Sync] = {}

    async def ensure_started(self) -> None:
        if self._started:
            return
        async with self._starting:
            if self._started:
                return
            await self.vocabulary.start()
            # Ticks are idempotent nudges: sent outside any transaction so they are seen
            # even by a partition whose transaction has nothing else to commit.
            self._ticks = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap, **client_options(self.settings)
            )
            await self._ticks.start()
            self.transition_partitions = len(
                await self._ticks.partitions_for(self.assembler.transitions_topic)
            )
            if self.settings.metrics_port:
                start_http_server(self.settings.metrics_port)
            self._started = True
            log.info("streams runtime started: %d items in the vocabulary", len(self.vocabulary))

    async def send_tick(self, topic: str, user: bytes) -> None:
        assert self._ticks is not None
        tick = SessionTick(user_id=user.decode(), ts_ms=int(time.time() * 1000))
        await self._ticks.send(topic, encode(tick), key=user)

    async def stop(self) -> None:
        await self.vocabulary.stop()
        if self._ticks is not None:
            await self._ticks.stop()
            self._ticks = None
        self._started = False


def create_app(settings: StreamsSettings, *, bootstrap: str | None = None) -> faust.App:
    # At least once, the patches still help (fetched records, highwaters), but only
    # exactly-once depends on them: only it refuses a release they were not tested with.
    eos.install(allow_untested=settings.streams_eos_untested
                or settings.processing_guarantee != "exactly_once")  # fmt: skip
    bootstrap = bootstrap or resolve_bootstrap(settings)
    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)
    # Local table state lives under RECQ_DATA_DIR (Faust's default is "<app id>-data" in
    # the working directory); Faust creates only the last level of it.
    datadir = settings.data_dir / "streams" / settings.streams_app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    quiet_retriable_client_errors()
    app = faust.App(
        settings.streams_app_id,
        broker=[f"kafka://{hostport}" for hostport in bootstrap.split(",")],
        broker_credentials=_credentials(settings),
        store=settings.streams_store,
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        datadir=datadir,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=max(settings.broker_session_timeout_s / 5, 0.5),
        consumer_auto_offset_reset="earliest",
        # Small fetches keep the inputs' read positions close while a backlog is read, so
        # the cross-topic synchronisation (see streams.session) holds back less.
        consumer_max_fetch_size=64 * 1024,
        # Batching per produce request (default 5 ms): with Faust's default (0) nearly
        # every output and changelog write was a request of its own, and socket writes
        # were the largest cost in the worker's profile. Outputs wait at most that long.
        producer_linger=settings.streams_producer_linger_ms / 1000,
        # A commit writes a whole batch at once (streams/batch.py): the changelog records
        # of every shopper touched and the transition batches, one partition per
        # transactional producer. aiokafka sends one batch per partition per request, so
        # at the default 16 KB a commit of 2,000 events took a dozen round trips in turn.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        broker_commit_livelock_soft_timeout=settings.streams_commit_livelock_s,
    )
    runtime = StreamsRuntime(settings, bootstrap, catalog)
    app.recq_runtime = runtime  # type: ignore[attr-defined]  # for inspection and tests
    assembler = runtime.assembler
    lock = eos.processing_lock(app)

    # --- topics: every input is co-partitioned by user_id ----------------------------------
    sources = app.topic(*assembler.source_topics, key_type=bytes, value_type=bytes)
    ticks_topic = catalog.name(TopicRole.SESSION_TICKS)

    # --- tables ------------------------------------------------------------------------------
    send = eos.transactional_sender(app)
    sessions = app.Table(
        "sessions",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
    )
    state: SessionCache | WriteThrough
    if settings.streams_state_writes == "commit":
        state = SessionCache(sessions, sessions.changelog_topic.get_topic_name())
        cache = state
        eos.before_commit(app, eos.CommitHook(lambda: cache.flush(send), cache.forget))
    else:
        state = WriteThrough(sessions)
    app.recq_state = state  # type: ignore[attr-defined]  # for inspection and tests

    # --- the open batch: written and committed together (streams/batch.py) -------------------
    batch = Batch(
        transitions_topic=assembler.transitions_topic,
        transitions_format=settings.transitions_format,
        max_events=settings.streams_batch_max,
        wait_s=settings.streams_batch_wait_ms / 1000,
        max_message_bytes=settings.max_payload_bytes // 2,
    )

    # After the sessions' hook: the changelog records, then the outputs, then the acks.
    eos.before_commit(app, eos.CommitHook(lambda: batch.flush(send), batch.forget))
    app.recq_batch = batch  # type: ignore[attr-defined]  # for inspection and tests

    async def close_batch(closed_by: ClosedBy) -> None:
        """Commit now: the commit writes the open batch first (``before_commit``)."""
        batch.closing = closed_by
        started = time.monotonic()
        await app.consumer.commit()
        metrics.COMMIT_SECONDS.observe(time.monotonic() - started)

    # --- agents ------------------------------------------------------------------------------
    @app.agent(sources, name="assemble-transitions")
    async def assemble(stream: StreamT[Any]) -> None:
        """One agent over all inputs, so a user's messages are handled one at a time."""
        await runtime.ensure_started()
        batch.transition_partitions = runtime.transition_partitions
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            message = event.message
            runtime.last_message_at = time.monotonic()
            if not assembler.resumed_ms:
                log.info("first message since start: %s[%d]@%d",
                         message.topic, message.partition, message.offset)  # fmt: skip
                assembler.resumed_ms = int(time.time() * 1000)
            produced_ms = int(message.timestamp * 1000)
            read_key = (message.topic, message.partition)
            if produced_ms > runtime.read_until.get(read_key, 0):
                runtime.read_until[read_key] = produced_ms
            async with lock:
                try:
                    result = await assembler.handle(
                        state,
                        key=message.key,
                        value=message.value,
                        source=Source(message.topic, message.partition, message.offset),
                        wall_ms=int(time.time() * 1000),
                        produced_ms=produced_ms,
                        synced=runtime.synced.get(message.partition, HELD),
                    )
                except SessionFormatError as exc:
                    stop_on_unreadable_state(exc)
                batch.add(event, result, message.topic, message.partition)
            runtime.handled[read_key] = message.offset + 1
            if batch.full:
                await close_batch("size")

    @app.task  # type: ignore[untyped-decorator]
    async def close_batches_on_time() -> None:
        """Close a batch RECQ_STREAMS_BATCH_WAIT_MS after its first event."""
        while True:
            due = batch.due_in()
            if due is None:
                await batch.opened.wait()
            elif due > 0:
                await asyncio.sleep(due)
            else:
                opened = batch.opened_at
                await close_batch("wait")
                if batch.opened_at == opened:  # not written (no commit possible yet)
                    await asyncio.sleep(batch.wait_s)

    # --- timers ------------------------------------------------------------------------------
    waiting_since: list[float] = []  # when idle ticks began to wait (empty: not waiting)

    def _note_waiting(why: str) -> None:
        """A warning every 30 s while idle sessions cannot be closed (operators should know:
        the last transition of each idle session is held back meanwhile)."""
        now = time.monotonic()
        if not waiting_since:
            waiting_since.append(now)
        elif now - waiting_since[0] >= 30:
            log.warning("idle sessions not closed for 30 s: %s", why)
            waiting_since[0] = now

    @app.timer(settings.session_tick_s)  # type: ignore[untyped-decorator]
    async def nudge_idle_sessions() -> None:
        """Ask the owner of each session with something due (events that waited the
        reorder window, or idle past the timeout) to act; the agent decides, in order."""
        if not assembler.resumed_ms:
            if app.rebalancing or not getattr(app.tables, "actives_ready", False):
                return  # not processing yet (recovering): nothing can be due
            if runtime.lag != 0:
                return  # a backlog: its first message starts processing (the agent)
            # Recovered, nothing to read, and no message has come: a restart after every
            # input was consumed. Processing begins now; waiting for a first message would
            # leave every open session unclosed (and its last transition unwritten).
            assembler.resumed_ms = int(time.time() * 1000)
            log.info("recovered with no input to read: idle sessions close from now")
        if runtime.lag is None or runtime.lag > TICK_MAX_LAG:
            # Reading a backlog: a user's next events may still be in it, so wall-clock
            # idleness means nothing yet. Their own messages still release what is due.
            log.debug("idle ticks wait: lag %s", runtime.lag)
            _note_waiting(f"lag {runtime.lag}")
            return
        await runtime.ensure_started()
        sessionizer = assembler.sessionizer
        now = int(time.time() * 1000)
        synced = Sync.weakest(runtime.synced.values())  # a user's partition is unknown here
        if not synced.caught_up:
            _note_waiting(f"inputs read to {runtime.synced}")
        else:
            waiting_since.clear()
        try:
            for n, (user, session) in enumerate(state.items(), 1):
                if sessionizer.ready(session, now, assembler.resumed_ms, synced):
                    await runtime.send_tick(ticks_topic, user)
                elif n % 1000 == 0:
                    await asyncio.sleep(0)  # a large table must not stall the agent
        except SessionFormatError as exc:
            stop_on_unreadable_state(exc)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_reading(sender: Any, revoked: set[Any], **_: Any) -> None:
        """What was read of a revoked partition counts for nothing now: the uncommitted
        work is rolled back (streams/eos.py) and the partition is read again from its
        committed offset, by this worker or another. Releases wait until the lag timer
        has measured again (HELD holds them back: safe, never wrong)."""
        for tp in revoked:
            runtime.read_until.pop((tp.topic, tp.partition), None)
            runtime.handled.pop((tp.topic, tp.partition), None)
        runtime.synced = {}
        runtime.lag = None

    unknown_since: dict[Any, float] = {}  # source partitions without a highwater yet
    warned: set[Any] = set()

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def report_lag() -> None:
        """Lag per input partition (metric, tick gate) and, per partition group, how far
        every input has been read (the release synchronisation)."""
        consumer = app.consumer
        total = 0
        read: dict[int, int] = {}  # per group: Kafka time every input was read past
        observed: dict[int, int] = {}  # per group: when the ends counted as read were seen
        for tp in consumer.assignment():
            if tp.topic not in assembler.source_topics:
                continue
            lag = None
            seen_at = None
            with contextlib.suppress(Exception):  # a partition mid-rebalance has no highwater
                # When the end below was learned (read first: the consumer's thread updates
                # the end before this time, so a newer end with an older time is safe).
                seen_at = end_observed_at(consumer, tp)
                highwater = consumer.highwater(tp)
                committed = getattr(consumer, "_committed_offset", {}).get(tp)  # faust's own
                lag = handled_lag(highwater, runtime.handled.get((tp.topic, tp.partition)),
                                  committed)  # fmt: skip
            if lag is None or seen_at is None:
                read[tp.partition] = 0
                unknown_since.setdefault(tp, time.monotonic())
                if time.monotonic() - unknown_since[tp] >= 10 and tp not in warned:
                    warned.add(tp)
                    log.warning("no highwater for %s after 10 s: releases and idle ticks of "
                                "partition %d wait for it", tp, tp.partition)  # fmt: skip
                continue
            unknown_since.pop(tp, None)
            warned.discard(tp)
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
            total += lag
            if tp.topic != ticks_topic:  # ticks carry no shopper events
                p = tp.partition
                if lag == 0:  # read to its end as seen at seen_at: covers what arrived by then
                    read.setdefault(p, CAUGHT_UP)
                    observed[p] = min(observed.get(p, CAUGHT_UP), seen_at)
                else:
                    until = runtime.read_until.get((tp.topic, p), 0)
                    read[p] = min(read.get(p, CAUGHT_UP), until)
        runtime.lag = total
        runtime.synced = {p: Sync(r, observed.get(p, CAUGHT_UP)) for p, r in read.items()}

    @app.timer(15.0)  # type: ignore[untyped-decorator]
    async def watch_consumer() -> None:
        """Diagnostics for a worker whose agent hears nothing for a minute: whether the
        consumer thread still answers, the lag and the paused partitions. (Seen after a
        kill -9 and restart in tests/reliability: recovery completes, then nothing
        reaches the agent; see docs/streams.md, "Exactly once".)"""
        quiet = time.monotonic() - runtime.last_message_at
        if quiet < 60:
            return
        consumer = app.consumer
        sources = [tp for tp in consumer.assignment() if tp.topic in assembler.source_topics]
        positions: dict[str, int | None] = {}
        try:
            for tp in sources:
                positions[f"{tp.topic}[{tp.partition}]"] = await asyncio.wait_for(
                    consumer.position(tp), 5.0
                )
        except TimeoutError:
            log.warning("the agent has received nothing for %.0f s and the consumer thread "
                        "does not answer position() within 5 s", quiet)  # fmt: skip
            return
        paused = sorted(map(str, getattr(consumer, "_paused_partitions", set())))
        # Caught up and idle is normal (no traffic); lag or paused inputs are not. A worker
        # that has not received one message since it started says so at info level.
        level = logging.WARNING if runtime.lag != 0 or paused else logging.DEBUG
        if level == logging.DEBUG and not assembler.resumed_ms:
            level = logging.INFO
        log.log(level, "the agent has received nothing for %.0f s; lag %s; positions %s; "
                "paused %s", quiet, runtime.lag, positions, paused)  # fmt: skip
        # A quiet agent should hold no interaction in any reorder buffer for long (they
        # leave after the reorder window). If some do, say who and why not (issue 14's
        # residual double-kill loss: a shopper's last event never became a transition).
        now = int(time.time() * 1000)
        synced = Sync.weakest(runtime.synced.values())
        held = []
        try:
            sessions_now = list(state.items())
        except SessionFormatError as exc:
            stop_on_unreadable_state(exc)
        for n, (user, session) in enumerate(sessions_now, 1):
            if n % 1000 == 0:
                await asyncio.sleep(0)  # a large table must not stall the agent
            if session.buffer:
                head = session.buffer[0]
                ready = assembler.sessionizer.ready(session, now, assembler.resumed_ms, synced)
                held.append(f"{user!r}: {len(session.buffer)} held, head arrived "
                            f"{(now - head.arrival_ms) / 1000:.0f} s ago, produced_ms "
                            f"{head.produced_ms}, ready {ready}")  # fmt: skip
        if held:
            log.warning("%d sessions hold buffered interactions while the agent is quiet "
                        "(synced %s, resumed_ms %s): %s", len(held), runtime.synced,
                        assembler.resumed_ms, "; ".join(held[:5]))  # fmt: skip

    async def close_runtime(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await runtime.stop()

    app.on_before_shutdown.connect(close_runtime)

    return app
