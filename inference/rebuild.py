"""Rebuilding shoppers' state for partitions a serving member has just been assigned.

A member keeps shoppers' state in memory, built from the event topics it consumes. A
member that restarts, or is handed partitions by a rebalance, resumes from the group's
committed offsets: without a rebuild it would answer every known shopper from popularity
until they act again. Before it answers anything of a newly assigned partition it
re-reads that partition's events from ``RECQ_SERVE_STATE_LOOKBACK_S`` ago up to the
position the group resumes from (``offsets_for_times``), the pattern of aiokafka's
``examples/local_state_consumer.py`` with the event topics as the store.

Why the event topics and not a state topic: serving's state is a function of a shopper's
recent events (the last L interactions, the cart, what was bought), so re-reading a
window gives the same state as a member that never stopped for every shopper whose events
fall inside it; the event topics already exist, are co-partitioned with the requests, and
need no second writer to keep consistent (a per-shopper state topic would be written by
the streams worker in its own format, coupling the two roles and their upgrades)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from inference.state import ShopEvent
from schemas.codec import Limits, Source, decode
from schemas.records import CartEvent, ClickEvent, Event, PurchaseEvent

log = logging.getLogger("recq.serve")

Apply = Callable[[ShopEvent, int], object]  # (event, partition)


@dataclass(frozen=True)
class Rebuilt:
    partitions: int
    events: int
    seconds: float


class StateRebuilder:
    """A group-less consumer that reads windows of the event topics on demand."""

    def __init__(
        self, bootstrap: str, options: dict[str, object], lookback_s: float, limits: Limits
    ) -> None:
        self.lookback_s = lookback_s
        self._limits = limits
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
            # Bulk reads: large fetches, no waiting for more bytes at the window's end.
            max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20, fetch_max_wait_ms=50,
            **options,
        )  # fmt: skip

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def rebuild(self, ends: dict[TopicPartition, int], apply: Apply) -> Rebuilt:
        """Apply every valid event of each partition whose timestamp is at most
        ``lookback_s`` old, up to (not including) its end offset, in offset order. The
        state rules are order-independent across topics (event time decides), so topics
        interleave."""
        started = time.monotonic()
        if self.lookback_s <= 0 or not ends:
            return Rebuilt(len(ends), 0, 0.0)
        since_ms = int(time.time() * 1000 - self.lookback_s * 1000)
        found = await self._consumer.offsets_for_times({tp: since_ms for tp in ends})
        # No message at or after the time: nothing of the partition is inside the window.
        starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in ends}
        todo = {tp: end for tp, end in ends.items() if starts[tp] < end}
        events = 0
        if todo:
            self._consumer.assign(list(todo))
            for tp in todo:
                self._consumer.seek(tp, starts[tp])
            while todo:
                # 2,000 events decode in ~30 ms: the event loop (heartbeats) runs between.
                batches = await self._consumer.getmany(*todo, timeout_ms=500, max_records=2_000)
                for tp, messages in batches.items():
                    end = todo.get(tp)
                    if end is None:
                        continue
                    for m in messages:
                        if m.offset >= end:
                            break
                        if m.timestamp < since_ms:
                            # offsets_for_times cuts in offset order; a late-produced old
                            # event can follow the cut. The window is by timestamp.
                            continue
                        event = decode(m.value, Event, limits=self._limits,
                                       source=Source(tp.topic, tp.partition, m.offset))  # fmt: skip
                        if isinstance(event, ClickEvent | CartEvent | PurchaseEvent):
                            apply(event, tp.partition)
                            events += 1
                for tp in list(todo):
                    # Position, not the last offset seen: the window may end in a gap.
                    if await self._consumer.position(tp) >= todo[tp]:
                        del todo[tp]
            self._consumer.unsubscribe()  # no background fetching between rebuilds
        return Rebuilt(len(ends), events, time.monotonic() - started)
