"""The open batch (streams/batch.py): nothing leaves before it closes; closing writes
every output into its source partition's transaction and acks the events only once the
broker has all of them; a dropped batch leaves nothing behind."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from schemas.codec import decode_transitions
from streams.assembler import Output, Result
from streams.batch import Batch

NOW = 1_790_000_000_000


class Event:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def ack(self) -> None:
        self.log.append(f"ack {self.name}")


def transition(user: str, seq: int) -> dict[str, Any]:
    return {"kind": "organic", "user_id": user, "seq": seq,
            "state": {"items": [], "events": [], "ages": []}, "action": seq, "reward": 0.2,
            "next_state": {"items": [seq], "events": [1], "ages": [1]}, "done": False,
            "ts_ms": NOW, "schema_version": 1}  # fmt: skip


def batch(fmt: str = "batch", partitions: int | None = None) -> Batch:
    b = Batch(transitions_topic="t.transitions", transitions_format=fmt,  # type: ignore[arg-type]
              max_events=3, wait_s=0.5, max_message_bytes=1 << 20)  # fmt: skip
    b.transition_partitions = partitions
    return b


def sender(log: list[str], sent: list[tuple[Any, ...]]) -> Any:
    async def send(topic: str, key: bytes | None, value: bytes, source_topic: str,
                   source_partition: int, partition: int | None) -> Any:  # fmt: skip
        sent.append((topic, key, value, source_topic, source_partition, partition))
        log.append(f"send {topic}")

        async def delivered() -> None:
            await asyncio.sleep(0.001)
            log.append(f"delivered {topic}")

        return asyncio.ensure_future(delivered())

    return send


@pytest.mark.parametrize("partitions", [None, 4, 3])
async def test_a_batch_writes_per_source_partition_then_acks(partitions: int | None) -> None:
    log: list[str] = []
    sent: list[tuple[Any, ...]] = []
    b = batch(partitions=partitions)
    letter = Output("t.dead-letter", b"u9", b"{}")
    b.add(Event(log, "a"), Result("t.transitions", [transition("u1", 0)]), "t.clicks", 3)
    b.add(Event(log, "b"), Result("t.transitions", [transition("u2", 0)]), "t.carts", 1)
    assert not b.full and b.due_in() is not None
    b.add(Event(log, "c"), Result(dead_letters=[letter]), "t.clicks", 3)
    b.add(Event(log, "d"), Result("t.transitions", [transition("u1", 1)]), "t.clicks", 3)
    assert b.full and log == []  # nothing written, nothing acked while open
    assert await b.flush(sender(log, sent)) == 4
    # One transition message per source partition, into that partition's transaction.
    messages = [s for s in sent if s[0] == "t.transitions"]
    target = {3: 3 % (partitions or 4), 1: 1}
    assert [(s[3], s[4], s[5]) for s in messages] == [("t.clicks", 3, target[3]),
                                                       ("t.carts", 1, target[1])]  # fmt: skip
    got = decode_transitions(messages[0][2], now_ms=NOW)
    assert [(t.user_id, t.seq) for t in got] == [("u1", 0), ("u1", 1)]  # type: ignore[union-attr]
    assert [s[:3] for s in sent if s[0] == "t.dead-letter"] == [("t.dead-letter", b"u9", b"{}")]
    # Every message delivered before the first ack.
    first_ack = log.index("ack a")
    assert all(e.startswith("delivered") for e in log[first_ack - 3 : first_ack])
    assert log[first_ack:] == ["ack a", "ack b", "ack c", "ack d"]
    assert b.events == [] and b.due_in() is None and b.written == 1
    assert await b.flush(sender(log, sent)) == 0  # an empty batch writes nothing


async def test_the_record_form_sends_one_keyed_message_per_transition() -> None:
    log: list[str] = []
    sent: list[tuple[Any, ...]] = []
    b = batch("record")
    b.add(Event(log, "a"), Result("t.transitions", [transition("u1", 0), transition("u1", 1)]),
          "t.clicks", 2)  # fmt: skip
    await b.flush(sender(log, sent))
    got = [(s[1], orjson.loads(s[2])["seq"], s[5]) for s in sent]
    assert got == [(b"u1", 0, None), (b"u1", 1, None)]


async def test_a_forgotten_batch_writes_and_acks_nothing() -> None:
    log: list[str] = []
    sent: list[tuple[Any, ...]] = []
    b = batch()
    b.add(Event(log, "a"), Result("t.transitions", [transition("u1", 0)]), "t.clicks", 0)
    b.forget()
    assert await b.flush(sender(log, sent)) == 0
    assert sent == [] and log == []
