"""The open batch: the events a worker handled since its last commit and what they
produced, held until the commit that writes them all together.

Before issue 24 the agent sent each event's transitions as it handled it (one produce
per transition) and acked the event at once. Now an event's outputs wait here with the
event; a batch closes after ``RECQ_STREAMS_BATCH_MAX`` events or
``RECQ_STREAMS_BATCH_WAIT_MS``, and closing it is a commit (streams/eos.py,
``before_commit``): under the processing lock the sessions touched are written to the
changelog (streams/state.py), then this batch's transitions, as a few columnar
``transition_batch`` messages per source partition (schemas/transition_batch.py), and
its dead letters go into that partition's transaction; once the broker has them the
batch's events are acked, and the transaction commits exactly those offsets. A crash
before then loses the batch, the open transactions and the acks together: the events are
read again from the last committed offsets. A revocation drops the batch (``forget``).

Why not Faust's ``stream.noack_take``: it collects events in a processor of a passive
background iteration and hands them over on a size or a timer, but the event handling
needs the processing lock and the per-event bookkeeping the worker does anyway (read
positions, the handled offset that tells the idle ticks the inputs are caught up). The
agent here still takes events one at a time from Faust's stream (the part every Faust
agent pays, ``faust_noop`` in bench/ingest.py), and batches what costs per message
after it: the produce, the changelog write and the commit."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from schemas.transition_batch import pack
from streams import metrics
from streams.assembler import Output, Result, as_record
from streams.eos import SendOutput

ClosedBy = Literal["size", "wait", "commit"]
log = logging.getLogger(__name__)


class Batch:
    """Events handled since the last commit, with their outputs, until it commits."""

    def __init__(
        self,
        *,
        transitions_topic: str,
        transitions_format: Literal["batch", "record"],
        max_events: int,
        wait_s: float,
        max_message_bytes: int,
    ) -> None:
        self.transitions_topic = transitions_topic
        self.transitions_format = transitions_format
        self.max_events = max_events
        self.wait_s = wait_s
        #: A batch message's size bound: half of what readers accept (RECQ_MAX_PAYLOAD_BYTES).
        self.max_message_bytes = max_message_bytes
        #: Transitions (single-record dicts, in the order written) per source partition.
        self.transitions: dict[int, list[dict[str, Any]]] = {}
        #: A source topic of each partition seen (which transaction the outputs join).
        self.sources: dict[int, str] = {}
        self.dead_letters: list[tuple[Output, str, int]] = []
        #: The batch's Faust events, acked when it has been written.
        self.events: list[Any] = []
        #: When the first event came in (monotonic; None while empty).
        self.opened_at: float | None = None
        self.opened = asyncio.Event()
        #: Why the next commit closes the batch (metrics; the closer sets it).
        self.closing: ClosedBy = "commit"
        #: Batches written since the worker started.
        self.written = 0
        #: Partitions of the transitions topic (the worker learns them at start): a batch
        #: of source partition p goes to p modulo this, so a topic made with fewer
        #: partitions than the inputs still keeps each shopper's transitions together.
        self.transition_partitions: int | None = None

    def add(self, event: Any, result: Result, topic: str, partition: int) -> None:
        """One handled event and what it produced (call under the processing lock)."""
        if not self.events:
            self.opened_at = time.monotonic()
            self.opened.set()
        self.events.append(event)
        self.sources[partition] = topic
        if result.transitions:
            self.transitions.setdefault(partition, []).extend(result.transitions)
        if result.dead_letters:
            self.dead_letters += [(out, topic, partition) for out in result.dead_letters]

    @property
    def full(self) -> bool:
        return len(self.events) >= self.max_events

    def due_in(self) -> float | None:
        """Seconds until the wait closes the open batch (None: no batch is open)."""
        if self.opened_at is None:
            return None
        return self.opened_at + self.wait_s - time.monotonic()

    async def flush(self, send: SendOutput) -> int:
        """Write the batch into its partitions' transactions and wait until the broker
        has every message; then ack its events, so the commit that follows covers
        exactly them. Returns how many events. (Called by the commit, under the lock.)"""
        if not self.events:
            return 0
        transitions, sources, dead, events = (self.transitions, self.sources,
                                              self.dead_letters, self.events)  # fmt: skip
        closed_by = self.closing
        self._reset()
        deliveries = []
        messages = 0
        for partition, rows in transitions.items():
            topic = sources[partition]
            if self.transitions_format == "batch":
                # To the source partition's own partition: a shopper's transitions stay in
                # one partition of the transitions topic, in the order written.
                target = partition % (self.transition_partitions or partition + 1)
                for raw in pack(rows, self.max_message_bytes):
                    deliveries.append(await send(self.transitions_topic, None, raw, topic,
                                                 partition, target))  # fmt: skip
                    messages += 1
            else:
                for out in (as_record(self.transitions_topic, t) for t in rows):
                    deliveries.append(await send(out.topic, out.key, out.value, topic,
                                                 partition, None))  # fmt: skip
                    messages += 1
        for out, topic, partition in dead:
            deliveries.append(await send(out.topic, out.key, out.value, topic, partition, None))
        await asyncio.gather(*deliveries)
        for event in events:
            event.ack()
        if not self.written:
            log.info("first batch written: %d events, %d transition messages", len(events),
                     messages)  # fmt: skip
        self.written += 1
        metrics.TRANSITION_MESSAGES.inc(messages)
        metrics.BATCHES.labels(closed_by).inc()
        metrics.BATCH_EVENTS.observe(len(events))
        return len(events)

    def forget(self) -> None:
        """Drop the open batch (a revocation aborted its transactions)."""
        self._reset()

    def _reset(self) -> None:
        self.transitions, self.sources, self.dead_letters, self.events = {}, {}, [], []
        self.opened_at = None
        self.opened.clear()
        self.closing = "commit"
