"""Exactly-once for the streams worker on faust-streaming 0.15.3.

faust's ``processing_guarantee="exactly_once"`` runs one transactional producer per
source partition and commits consumed offsets inside those transactions, but three gaps
let a crashed worker duplicate output and lose table updates (faust-streaming issues
#177 and #340; measured here: 1,072 duplicates in 30,000 after a kill -9):

1. A message is "acked" (its offset becomes committable) when the agent asks for the
   next one, while the periodic commit runs in another task: a commit can include the
   outputs of an event whose offset it does not include, or the reverse.
2. Table changelog writes wait in faust's producer buffer; the exactly-once commit path
   does not flush it, so a commit can cover offsets whose state updates are still
   buffered and later land in the next transaction.

Fix, kept small and explicit: the agent processes each event, sends its outputs and acks
it while holding the app's processing lock; the consumer's commit takes the same lock and
flushes the producer buffer first. Outputs are sent on the transactional producer of the
event's *source* partition (``send_in_transaction``), so output, state update and offset
commit share one transaction. Duplicates after a kill -9 are gone (tests/reliability).

3. ``ProducerBuffer.flush`` alone is not enough: it waits at most 0.1 s per message and does
not count a write its background task is still publishing (with only that, about one
kill -9 run in three lost one user's table update). So the buffer's sends are counted
while in flight, and the commit waits until the queue is empty and none is in flight;
no new write can appear meanwhile, since the agent is held by the lock.

4. Table recovery after a restart could start from nothing. Under exactly-once faust
asks ``last_stable_offset(tp)`` of its consumer for each changelog partition's highwater:
aiokafka answers from the last *fetch* response, so a partition not fetched yet gives
None, which faust takes as "highwater -1": an empty changelog, nothing to restore. A
worker restarted quickly (the second of two kills in a row: issue 14's scenario) then
ran with empty session tables from the committed input offsets on, and every open
session's history, reorder buffer and reward windows were gone. The highwaters are now
asked of the broker (``end_offsets`` with the consumer's read_committed isolation: the
last stable offset itself), see ``_highwaters_from_the_broker``.

5. Not a loss but a false alarm: faust's commit-liveness check never learns of
transactional commits, so a healthy exactly-once worker logged "Has not committed ... at
all since worker start" as an error for every partition (see
``_commit_offsets_noting_transactions``).

6. A worker that lost its group membership duplicated what it had in flight. When the
broker restarted, the worker's session expired; it rejoined and got the same partitions
back. faust stops the transactional producers only of partitions it does not get back,
so the open transaction (outputs of events whose offsets were not committed) stayed
open: begin_transaction failed ("IN_TRANSACTION -> IN_TRANSACTION"), the worker re-read
from the committed offsets, produced those outputs again into the same transaction, and
committed both copies (1,469 duplicates of 10,655 in tests/reliability). Its in-memory
tables also kept the updates of that uncommitted work. Now every revocation rolls back
as Kafka Streams closes a task "dirty" under exactly-once: the buffered writes go out,
each revoked partition's transaction is aborted (or, if that fails, its producer is
dropped: the next one with the same transactional id fences it), and the in-memory
tables are emptied, to be restored from the committed changelog's start (faust itself
would resume a partition it keeps from the offset it had read to: the emptied table's
sessions on that partition would be gone, so those offsets are forgotten too). A
rebalance now costs the work since the last commit (at most the commit interval) and a
re-read of the changelog, never a duplicate. See ``_roll_back_on_revoke``.

7. Fetched records were dropped. faust hands its consumer thread the *live* set of
active partitions to fetch from, then filters the fetched batch against that same set:
a partition that left the set meanwhile (flow control takes a partition out while the
agent's queue is under pressure) had its fetched records skipped, while the consumer's
position had moved past them. Nothing read them again: the partition was still
assigned, the generation unchanged. Seen as a shopper's cart that never reached the
agent (its purchase came out as ``seq`` 2, ``done``, from [click A, click B]): the first
carts of the kept partitions after a rebalance, 73-145 of 400 shoppers
(tests/reliability/test_crash.py). What was fetched is now delivered, as faust's own
flow-control comment intends ("we still accept anything that's currently in the
fetcher"); a revocation still stops a batch (faust's generation and flow checks), and
the partitions it keeps are sought back to their committed offsets. See
``_deliver_what_was_fetched``.

8. Fetched records were also dropped when recovery ended. faust's
``Recovery.on_recovery_completed`` resumes the stream partitions, seeks them to their
committed offsets and only then resumes flow control, which empties the agents'
queues. Records fetched meanwhile were in those queues: for a partition with a
committed offset the seek brings them back, but aiokafka does not seek a partition that
has none (``seek_to_committed`` skips offsets that are None or 0), so they were gone.
This was issue 14's double kill: a restarted worker reading a backlog of carts (or
purchases) that no worker had committed yet lost the shopper whose message sat in the
queue at that instant (1 run in 5; the worker's own log showed its first message
handled before "Worker ready"). Now flow control is suspended before faust resumes the
partitions: a fetched record waits at the conductor (not in a queue) until faust's
resume has emptied the queues, then goes in. See ``_end_recovery_keeping_fetched``.

9. Not a loss but a stall: faust commits the transactions of a worker's partitions one
after the other (offsets, commit, begin: several round trips each), while the processing
lock holds the agent. With a commit per batch (streams/batch.py) that was 20-115 ms of
every 2,000 events on this machine. Each partition has its own transactional producer
and lock, so they now commit concurrently (``_commit_transactions_together``).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable, Mapping, Set
from dataclasses import dataclass
from time import monotonic
from typing import Any

import faust
from aiokafka.producer.transaction_manager import TransactionState
from faust.stores.memory import Store as MemoryStore
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer, TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Producer
from faust.transport.producer import ProducerBuffer
from faust.types import TP, AppT

log = logging.getLogger(__name__)

_LOCK_ATTR = "_recq_processing_lock"
_HOOKS_ATTR = "_recq_commit_hooks"
_original_commit = Consumer.commit
_original_commit_offsets = Consumer._commit_offsets
_original_send_pending = ProducerBuffer._send_pending
_original_on_revoked = TransactionManager.on_partitions_revoked
_IN_FLIGHT_ATTR = "_recq_in_flight"
_original_wait_next_records = Consumer._wait_next_records
_original_on_recovery_completed = Recovery.on_recovery_completed
_original_highwaters = AIOKafkaConsumerThread._highwaters
_original_commit_transactions = Producer.commit_transactions


@dataclass(frozen=True)
class CommitHook:
    """State an app keeps between commits (streams/state.py's SessionCache): ``flush``
    writes it into the open transactions just before each commit, under the processing
    lock; ``forget`` drops it when a revocation aborts those transactions."""

    flush: Callable[[], Awaitable[Any]]
    forget: Callable[[], None]


def before_commit(app: faust.App, hook: CommitHook) -> None:
    """Run ``hook`` at every commit of ``app`` (and its ``forget`` at every roll-back)."""
    hooks: list[CommitHook] = getattr(app, _HOOKS_ATTR, [])
    setattr(app, _HOOKS_ATTR, [*hooks, hook])


async def flush_kept_state(app: faust.App | AppT) -> None:
    """Write what the ``before_commit`` hooks keep (the commit calls this, under the lock)."""
    for hook in getattr(app, _HOOKS_ATTR, ()):
        await hook.flush()


def forget_kept_state(app: faust.App | AppT) -> None:
    """Drop what the ``before_commit`` hooks keep (a roll-back calls this, under the lock)."""
    for hook in getattr(app, _HOOKS_ATTR, ()):
        hook.forget()


def processing_lock(app: faust.App) -> asyncio.Lock:
    """The lock that makes (process, send, ack) atomic with respect to commits."""
    lock: asyncio.Lock | None = getattr(app, _LOCK_ATTR, None)
    if lock is None:
        lock = asyncio.Lock()
        setattr(app, _LOCK_ATTR, lock)
    return lock


async def _commit_under_lock(self: Consumer, *args: Any, **kwargs: Any) -> bool:
    lock: asyncio.Lock | None = getattr(self.app, _LOCK_ATTR, None)
    if lock is None:  # an app that did not opt in keeps faust's behaviour
        return await _original_commit(self, *args, **kwargs)
    async with lock:
        # State kept since the last commit is written into the transactions now
        # (streams/state.py), and every table write made so far must be in the producer,
        # before the offsets it belongs with are committed.
        await flush_kept_state(self.app)
        await _buffer_sent(self.app)
        return await _original_commit(self, *args, **kwargs)


async def _buffer_sent(app: Any) -> None:
    """Wait until faust's producer buffer (table changelog writes) is empty and none of
    its sends is in flight. (Polled: faust exposes no event for these.)"""
    buffer = app.producer.buffer
    while buffer.size or getattr(buffer, _IN_FLIGHT_ATTR, 0):  # noqa: ASYNC110
        await asyncio.sleep(0.001)


#: How long an abort may take before the producer is dropped instead (fencing aborts).
ABORT_TIMEOUT_S = 10.0
_ABORTABLE = (TransactionState.IN_TRANSACTION, TransactionState.ABORTABLE_ERROR)


async def _roll_back_on_revoke(self: TransactionManager, revoked: Set[TP]) -> None:
    """Abort the open transactions of the revoked partitions and forget the in-memory
    table state they covered (point 6 above)."""
    await _original_on_revoked(self, set(revoked))  # faust: flush the producer
    lock: asyncio.Lock | None = getattr(self.app, _LOCK_ATTR, None)
    if lock is None:
        return
    async with lock:  # no event is half processed; none starts until this is done
        await _buffer_sent(self.app)
        producers = self.producer._transaction_producers  # type: ignore[attr-defined]
        aborted = 0
        for tid in sorted(self._tps_to_transactional_ids(set(revoked))):
            txn = producers.get(tid)
            if txn is None or txn._txn_manager is None:
                continue
            if txn._txn_manager.state not in _ABORTABLE:
                continue
            try:
                await asyncio.wait_for(txn.abort_transaction(), ABORT_TIMEOUT_S)
                aborted += 1
            except Exception as exc:
                log.warning("could not abort transaction %s (%r): dropping its producer; "
                            "the next one with this id fences it", tid, exc)  # fmt: skip
                await self.producer.stop_transaction(tid)
        # Whole tables: faust's rebalancing is eager, every revocation takes all
        # partitions. An emptied table must also be read again from the changelog's
        # start: faust's recovery resumes a partition it keeps from the offset it had
        # read to, which alone would leave the kept partitions' sessions empty.
        forget_kept_state(self.app)  # what was kept since the last commit: aborted work
        emptied = {table.changelog_topic.get_topic_name()
                   for table in self.app.tables.values() if _forget(table.data)}  # fmt: skip
        _read_again_from_start(self.app.tables, emptied)
        log.info("partitions revoked: %d open transactions aborted, tables emptied "
                 "(restored from the committed changelog on assignment)", aborted)  # fmt: skip


def _forget(store: Any) -> bool:
    """Empty an in-memory table store (True); other stores keep their data (False: their
    recovery resumes from offsets they persist)."""
    if not isinstance(store, MemoryStore):
        return False
    store.data.clear()
    store._key_partition.clear()  # which partition each key came from (faust 0.15)
    return True


def _read_again_from_start(tables: Any, changelogs: Set[str]) -> None:
    """Make faust's recovery read these changelog topics from their start: forget how far
    it read them, as active and as standby partitions. (Changelog records queued but not
    applied are dropped by faust itself: the revocation clears its flow-controlled queues.)"""
    recovery = tables.recovery
    for offsets in (recovery.active_offsets, recovery.standby_offsets):
        for tp in [tp for tp in offsets if tp.topic in changelogs]:
            del offsets[tp]


async def _commit_offsets_noting_transactions(
    self: Consumer, offsets: Mapping[TP, int], start_new_transaction: bool = True
) -> bool:
    """faust's commit-liveness check reads when each partition last committed from its
    consumer thread's ``tp_last_committed_at``, which only the non-transactional commit
    updates: under exactly-once every healthy partition was reported as "has not
    committed at all since worker start". A transactional commit now updates it too."""
    committed = await _original_commit_offsets(self, offsets, start_new_transaction)
    if committed and self.in_transaction:
        now = monotonic()  # the clock the check compares with
        stamps = self._thread.tp_last_committed_at  # type: ignore[attr-defined]
        stamps.update({tp: now for tp in offsets if tp in self.assignment()})
    return committed


async def _counted_send_pending(self: ProducerBuffer, fut: Any) -> None:
    setattr(self, _IN_FLIGHT_ATTR, getattr(self, _IN_FLIGHT_ATTR, 0) + 1)
    try:
        await _original_send_pending(self, fut)
    finally:
        setattr(self, _IN_FLIGHT_ATTR, getattr(self, _IN_FLIGHT_ATTR) - 1)


async def _highwaters_from_the_broker(
    self: AIOKafkaConsumerThread, partitions: list[TP]
) -> Mapping[TP, int]:
    """Each partition's end as the broker says it now (ListOffsets; read_committed under
    exactly-once, so the last stable offset), not the consumer's cached view of it."""
    offsets: Mapping[TP, int] = await self._ensure_consumer().end_offsets(partitions)
    return offsets


async def _deliver_what_was_fetched(
    self: Consumer,
    timeout: float,  # noqa: ASYNC109 (faust's signature)
) -> tuple[Mapping[TP, Any] | None, set[TP] | None]:
    """faust's fetch, minus the filter that dropped fetched records (point 7): the batch
    holds only partitions that were active when it was fetched, so "no filter" (None)
    delivers exactly those."""
    records, _active_now = await _original_wait_next_records(self, timeout)
    return records, None


async def _end_recovery_keeping_fetched(self: Recovery, generation_id: int = 0) -> None:
    """faust's end of recovery with flow control suspended until faust resumes it
    (point 8): no fetched record is put into an agent's queue that faust then empties."""
    self.app.flow_control.suspend()
    try:
        await _original_on_recovery_completed(self, generation_id)
    except BaseException:
        self.app.flow_control.resume()  # as faust would have left it
        raise


async def _commit_transactions_together(
    self: Producer,
    tid_to_offset_map: Mapping[str, Mapping[TP, int]],
    group_id: str,
    start_new_transaction: bool = True,
) -> None:
    """faust's per-partition transaction commits (point 9), run concurrently: the same
    steps under the same per-transactional-id locks, one task per producer."""

    async def one(transactional_id: str, offsets: Mapping[TP, int]) -> None:
        await _original_commit_transactions(
            self, {transactional_id: offsets}, group_id, start_new_transaction
        )

    await asyncio.gather(*(one(tid, offsets) for tid, offsets in tid_to_offset_map.items()))


@dataclass(frozen=True)
class Patch:
    """One replaced faust method: what it fixes (the numbered points above), the test that
    fails without it, and what of faust / aiokafka it relies on (held to the installed
    classes by tests/streams/test_eos_contract.py)."""

    owner: type[Any]
    method: str
    replacement: Callable[..., Any]
    original: Callable[..., Any]  # faust's, as imported (before ``install``)
    point: int
    fixes: str
    test: str
    #: "Class.attribute" names the replacement reads or calls beyond its own arguments.
    relies_on: tuple[str, ...] = ()


PATCHES: tuple[Patch, ...] = (
    Patch(Consumer, "commit", _commit_under_lock, _original_commit, 1,
          "a commit could cover an event's offset without its outputs, or the reverse",
          "tests/reliability/test_crash.py", ("ProducerBuffer.size",)),
    Patch(ProducerBuffer, "_send_pending", _counted_send_pending, _original_send_pending, 3,
          "a commit did not wait for buffered changelog writes still in flight",
          "tests/streams/test_eos.py", ()),
    Patch(AIOKafkaConsumerThread, "_highwaters", _highwaters_from_the_broker,
          _original_highwaters, 4,
          "recovery after a quick restart read empty changelogs (no fetch yet)",
          "tests/streams/test_eos.py",
          ("AIOKafkaConsumerThread._ensure_consumer",)),
    Patch(Consumer, "_commit_offsets", _commit_offsets_noting_transactions,
          _original_commit_offsets, 5,
          "false 'has not committed' errors under exactly-once",
          "tests/streams/test_eos.py",
          ("ThreadDelegateConsumer._thread", "AIOKafkaConsumerThread.tp_last_committed_at")),
    Patch(TransactionManager, "on_partitions_revoked", _roll_back_on_revoke,
          _original_on_revoked, 6,
          "a worker that lost its membership committed its in-flight outputs twice",
          "tests/reliability/test_crash.py",
          ("Producer._transaction_producers", "TransactionManager._tps_to_transactional_ids",
           "MemoryStore._key_partition", "Recovery.active_offsets",
           "Recovery.standby_offsets")),
    Patch(Consumer, "_wait_next_records", _deliver_what_was_fetched,
          _original_wait_next_records, 7,
          "records fetched while flow control paused their partition were dropped",
          "tests/reliability/test_crash.py", ()),
    Patch(Recovery, "on_recovery_completed", _end_recovery_keeping_fetched,
          _original_on_recovery_completed, 8,
          "records fetched while recovery ended were emptied out of the agents' queues",
          "tests/reliability/test_crash.py", ("FlowControlEvent.suspend",)),
    Patch(Producer, "commit_transactions", _commit_transactions_together,
          _original_commit_transactions, 9,
          "partitions' transactions committed one after another while the agent waited",
          "tests/streams/test_eos.py", ()),
)  # fmt: skip

#: The releases the patches were written and tested for (`make reliability` passes). An
#: upgrade: run `make reliability` against the new release, then widen these (docs/streams.md).
WRITTEN_FOR = {"faust-streaming": ((0, 15, 3), (0, 15, 4)), "aiokafka": ((0, 14, 0), (0, 15, 0))}


class UntestedFaust(RuntimeError):
    """The installed faust-streaming or aiokafka is outside ``WRITTEN_FOR``."""


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def untested_releases() -> list[str]:
    """'name version' of each installed library outside the range the patches target."""
    out = []
    for name, (low, high) in WRITTEN_FOR.items():
        installed = importlib.metadata.version(name)
        if not low <= _release(installed) < high:
            out.append(f"{name} {installed}")
    return out


def install(*, allow_untested: bool = False) -> None:
    """Patch faust (idempotent; apps that take no processing lock keep faust's commit).
    Refuses a faust-streaming or aiokafka release the patches were not tested with,
    unless ``allow_untested`` (``RECQ_STREAMS_EOS_UNTESTED=true``)."""
    if untested := untested_releases():
        ranges = ", ".join(f"{name} {'.'.join(map(str, low))} to below "
                           f"{'.'.join(map(str, high))}"
                           for name, (low, high) in WRITTEN_FOR.items())  # fmt: skip
        message = (
            f"exactly-once: streams/eos.py patches faust for {ranges}; installed "
            f"{', '.join(untested)}. Install the locked versions (make test), or run "
            "`make reliability` with this release and widen streams.eos.WRITTEN_FOR; "
            "RECQ_STREAMS_EOS_UNTESTED=true runs anyway"
        )
        if not allow_untested:
            raise UntestedFaust(message)
        log.warning("%s (RECQ_STREAMS_EOS_UNTESTED=true)", message)
    for patch in PATCHES:
        if getattr(patch.owner, patch.method) is not patch.replacement:
            setattr(patch.owner, patch.method, patch.replacement)


#: Produce one output inside the transaction of a source partition: (topic, key, value,
#: source topic, source partition, target partition or None for the key's). Returns the
#: delivery future once the producer has taken the message.
SendOutput = Callable[[str, bytes | None, bytes, str, int, int | None], Awaitable[Awaitable[Any]]]


def transactional_sender(app: faust.App) -> SendOutput:
    """``send_in_transaction`` for the commit hooks (streams/state.py, streams/batch.py)."""

    async def send(topic: str, key: bytes | None, value: bytes, source_topic: str,
                   source_partition: int, partition: int | None) -> Awaitable[Any]:  # fmt: skip
        return await send_in_transaction(
            app, topic, key, value, TP(source_topic, source_partition), partition
        )

    return send


async def send_in_transaction(
    app: faust.App,
    topic: str,
    key: bytes | None,
    value: bytes,
    source: TP,
    partition: int | None = None,
) -> Awaitable[Any]:
    """Produce ``value`` inside the transaction that will commit ``source``'s offset
    (or plainly, when the app runs at least once); to ``partition`` if given, else the
    key's. Returns the delivery future."""
    if app.in_transaction:
        group = app.assignor.group_for_topic(source.topic)
        transactional_id = f"{app.conf.id}-{group}-{source.partition}"
        producer = app.consumer.transactions.producer
        return await producer.send(topic, key, value, partition, None, None,
                                   transactional_id=transactional_id)  # fmt: skip
    return await app.producer.send(topic, key, value, partition, None, None)
