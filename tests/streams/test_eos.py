"""streams/eos.py's liveness bookkeeping: a transactional commit counts as a commit for
faust's commit-liveness check (which only its non-transactional path fed, so a healthy
exactly-once worker was reported as "has not committed ... at all since worker start")."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.stores.memory import Store as MemoryStore
from faust.types import TP

from streams import eos

ASSIGNED, REVOKED = TP("t", 0), TP("t", 1)


class FakeConsumer(SimpleNamespace):
    def assignment(self) -> set[TP]:
        return {ASSIGNED}


@pytest.mark.parametrize(("in_transaction", "committed"), [(True, True), (True, False),
                                                           (False, True)])  # fmt: skip
def test_a_transactional_commit_is_noted_for_the_liveness_check(
    monkeypatch: pytest.MonkeyPatch, in_transaction: bool, committed: bool
) -> None:
    async def faust_commit_offsets(self: Any, offsets: Any, start: bool = True) -> bool:
        return committed

    monkeypatch.setattr(eos, "_original_commit_offsets", faust_commit_offsets)
    stamps: dict[TP, float] = {}
    consumer = FakeConsumer(in_transaction=in_transaction,
                            _thread=SimpleNamespace(tp_last_committed_at=stamps))  # fmt: skip
    result = asyncio.run(
        eos._commit_offsets_noting_transactions(consumer, {ASSIGNED: 10, REVOKED: 4})  # type: ignore[arg-type]
    )
    assert result is committed
    # Only a transactional commit that happened, and only for assigned partitions; the
    # non-transactional path stamps them itself (faust).
    assert set(stamps) == ({ASSIGNED} if in_transaction and committed else set())


def test_install_patches_the_commit_paths_once() -> None:
    from faust.transport.consumer import Consumer

    eos.install()
    eos.install()
    assert Consumer._commit_offsets is eos._commit_offsets_noting_transactions
    assert Consumer.commit is eos._commit_under_lock


def test_changelog_highwaters_are_asked_of_the_broker() -> None:
    """A consumer that has not fetched a changelog partition yet knows no last stable
    offset (None): faust took that as an empty changelog and restored nothing. The
    patched highwaters ask the broker (end_offsets) and ignore the cached view."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    eos.install()
    changelog = TP("app-sessions-changelog", 2)

    class NotFetchedYet:
        def last_stable_offset(self, tp: TP) -> None:
            return None  # what aiokafka answers before the first fetch

        async def end_offsets(self, tps: list[TP]) -> dict[TP, int]:
            return dict.fromkeys(tps, 1017)  # the broker's last stable offset

    thread = SimpleNamespace(_ensure_consumer=NotFetchedYet,
                             consumer=SimpleNamespace(in_transaction=True))  # fmt: skip
    got = asyncio.run(AIOKafkaConsumerThread._highwaters(thread, [changelog]))  # type: ignore[arg-type]
    assert got == {changelog: 1017}


class FakeTxnProducer:
    """An aiokafka transactional producer as far as the roll-back touches it."""

    def __init__(self, state: Any, abort_fails: bool = False) -> None:
        self._txn_manager = SimpleNamespace(state=state)
        self.abort_fails = abort_fails
        self.aborted = False

    async def abort_transaction(self) -> None:
        if self.abort_fails:
            raise RuntimeError("coordinator gone")
        self.aborted = True


def test_a_revocation_aborts_open_transactions_and_restores_the_tables_from_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker-restart bug: partitions revoked and given back to the same worker kept
    their open transactions, and the outputs of uncommitted events were committed twice.
    A revocation must abort every revoked partition's open transaction (drop the
    producer when the abort fails), keep a producer with no open transaction, and empty
    the in-memory tables, whose uncommitted updates the changelog does not have."""
    from aiokafka.producer.transaction_manager import TransactionState

    async def faust_on_revoked(self: Any, revoked: Any) -> None:
        return None

    monkeypatch.setattr(eos, "_original_on_revoked", faust_on_revoked)
    producers = {
        "g-0-0": FakeTxnProducer(TransactionState.IN_TRANSACTION),
        "g-0-1": FakeTxnProducer(TransactionState.ABORTABLE_ERROR, abort_fails=True),
        "g-0-2": FakeTxnProducer(TransactionState.READY),
    }
    stopped: list[str] = []

    async def stop_transaction(tid: str) -> None:
        stopped.append(tid)

    # faust's real in-memory store (what the worker's tables use), not a stand-in: the
    # roll-back clears its private key -> partition map too.
    faust_app = faust.App("eos-test", store="memory://")
    store = MemoryStore("memory://", faust_app, faust_app.Table("sessions"))
    store.data[b"alice"] = b"state"
    store._key_partition[b"alice"] = 0
    changelog = SimpleNamespace(get_topic_name=lambda: "app-sessions-changelog")
    sessions = TP("app-sessions-changelog", 0)
    other = TP("app-other-changelog", 0)  # a table whose store keeps its data
    recovery = SimpleNamespace(active_offsets={sessions: 812, other: 90},
                               standby_offsets={TP("app-sessions-changelog", 1): 640})  # fmt: skip

    class Tables(dict):  # type: ignore[type-arg]
        pass

    tables = Tables(sessions=SimpleNamespace(data=store, changelog_topic=changelog))
    tables.recovery = recovery  # type: ignore[attr-defined]
    app = SimpleNamespace(producer=SimpleNamespace(buffer=SimpleNamespace(size=0)), tables=tables)
    eos.processing_lock(app)  # type: ignore[arg-type]
    manager = SimpleNamespace(
        app=app,
        producer=SimpleNamespace(_transaction_producers=producers,
                                 stop_transaction=stop_transaction),
        _tps_to_transactional_ids=lambda tps: {f"g-0-{tp.partition}" for tp in tps},
    )  # fmt: skip
    revoked = {TP("t", 0), TP("t", 1), TP("t", 2)}
    asyncio.run(eos._roll_back_on_revoke(manager, revoked))  # type: ignore[arg-type]
    assert producers["g-0-0"].aborted
    assert stopped == ["g-0-1"]  # the abort failed: the next producer fences it
    assert not producers["g-0-2"].aborted  # nothing open
    assert store.data == {} and store._key_partition == {}
    # Emptied, so read again from the changelog's start, as active and as standby (faust
    # would resume a partition it keeps from where it had read: its sessions lost).
    assert recovery.active_offsets == {other: 90}
    assert recovery.standby_offsets == {}


def test_records_fetched_while_recovery_ends_are_not_emptied_out_of_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14's double kill. faust ends recovery by resuming the stream partitions,
    seeking and then resuming flow control, which empties the agents' queues; a record
    fetched in between (of a partition with no committed offset, which no seek brings
    back) was put into the queue and emptied out. The conductor below does what faust's
    does with a fetched record (wait for flow control, then put it in the agent's queue)."""
    from mode.utils.queues import FlowControlEvent, FlowControlQueue

    async def scenario() -> list[str]:
        flow_control = FlowControlEvent()
        flow_control.resume()
        queue: FlowControlQueue[str] = FlowControlQueue(
            flow_control=flow_control, clear_on_resume=True
        )
        delivered: list[asyncio.Task[None]] = []

        async def conductor(record: str) -> None:
            await flow_control.acquire()
            queue.put_nowait(record)

        async def faust_on_recovery_completed(self: Any, generation_id: int = 0) -> None:
            # resume_partitions, then perform_seek: a fetch delivers a record meanwhile
            delivered.append(asyncio.ensure_future(conductor("cart-0")))
            await asyncio.sleep(0.01)
            flow_control.resume()  # faust: empties the queues

        monkeypatch.setattr(eos, "_original_on_recovery_completed", faust_on_recovery_completed)
        recovery = SimpleNamespace(app=SimpleNamespace(flow_control=flow_control))
        await eos._end_recovery_keeping_fetched(recovery)  # type: ignore[arg-type]
        await asyncio.gather(*delivered)
        return [queue.get_nowait() for _ in range(queue.qsize())]

    assert asyncio.run(scenario()) == ["cart-0"]


def test_flow_control_is_resumed_if_ending_recovery_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from mode.utils.queues import FlowControlEvent

    async def failing(self: Any, generation_id: int = 0) -> None:
        raise RuntimeError("broker gone")

    monkeypatch.setattr(eos, "_original_on_recovery_completed", failing)
    flow_control = FlowControlEvent()
    recovery = SimpleNamespace(app=SimpleNamespace(flow_control=flow_control))
    with pytest.raises(RuntimeError):
        asyncio.run(eos._end_recovery_keeping_fetched(recovery))  # type: ignore[arg-type]
    assert flow_control.is_active()


def test_the_partitions_transactions_commit_together_each_in_faust_order() -> None:
    """Point 9: each producer still sends its offsets, commits and begins anew, in that
    order and under its own lock (faust's steps), but the producers do it concurrently."""
    from faust.transport.drivers.aiokafka import Producer

    steps: list[tuple[str, str]] = []
    running = {"now": 0, "most": 0}

    class Txn:
        def __init__(self, tid: str) -> None:
            self.tid = tid

        async def step(self, name: str) -> None:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
            await asyncio.sleep(0.01)  # a round trip
            running["now"] -= 1
            steps.append((self.tid, name))

        async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
            await self.step("offsets")

        async def commit_transaction(self) -> None:
            await self.step("commit")

        async def begin_transaction(self) -> None:
            await self.step("begin")

    tids = [f"app-0-{p}" for p in range(4)]
    producer = Producer.__new__(Producer)
    producer._transaction_producers = {tid: Txn(tid) for tid in tids}  # type: ignore[assignment]
    producer._trn_locks = {tid: asyncio.Lock() for tid in tids}
    offsets = {tid: {TP("t", p): 10 * p} for p, tid in enumerate(tids)}
    asyncio.run(eos._commit_transactions_together(producer, offsets, "app"))
    for tid in tids:
        assert [name for t, name in steps if t == tid] == ["offsets", "commit", "begin"]
    assert running["most"] == 4  # all four at once, not one after another
