"""The transitions feed: the learner's Kafka consumer, writing into the replay store.

Every partition of the transitions topic is assigned (read_committed: only transitions
of committed worker transactions) and positioned so the store is refilled as far back as
its capacity allows: back from the checkpoint's offsets after a restart, from the end on
a first start, by the offsets that hold capacity/partitions transitions (a worker's batch
message holds many). Invalid transitions are
dead-lettered; positions are committed to the learner's group for lag monitoring.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from learner import metrics
from learner.replay.buffer import ReplayBuffer
from learner.replay.slates import SlateStore
from schemas import transition_batch
from schemas.codec import Limits, Source, decode_transitions, encode
from schemas.records import DeadLetter, SlateTransition, Transition

log = logging.getLogger("recq.learner")
#: Offsets read before the refill's anchor to learn how many transitions an offset holds.
REFILL_PROBE = 32


class TransitionFeed:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        topic: str,
        dead_letter_topic: str,
        replay: ReplayBuffer,
        limits: Limits,
        slates: SlateStore | None = None,
        slate_observers: Sequence[Callable[[list[SlateTransition]], object]] = (),
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.replay = replay
        self.slates = slates
        self.limits = limits
        self.slate_observers = list(slate_observers)  # the gate's window, the guard
        self.positions: dict[int, int] = {}
        #: Newest event time of any transition read (freshness: manifest trained_through).
        self.newest_event_ts_ms = 0
        self.consumed = 0
        # Offsets below these were processed before the restart (the refill re-reads
        # them): their dead letters were already written and are not written twice.
        self._refill_until: dict[int, int] = {}

    async def assign(self, checkpoint_offsets: dict[int, int] | None) -> dict[int, int]:
        """Assign all partitions and seek for the refill; returns the start offsets."""
        partitions = self.consumer.partitions_for_topic(self.topic)
        if not partitions:
            await self.consumer._client.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise RuntimeError(f"topic {self.topic} not found: run `recq topics create`")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        begin = await self.consumer.beginning_offsets(tps)
        end = await self.consumer.end_offsets(tps)
        share = max(1, self.replay.storage.capacity // len(tps))
        anchors = {}
        for tp in tps:
            anchors[tp] = end[tp]
            if checkpoint_offsets is not None and tp.partition in checkpoint_offsets:
                anchors[tp] = min(end[tp], checkpoint_offsets[tp.partition])
        back = await self._offsets_holding(share, tps, begin, anchors)
        starts: dict[int, int] = {}
        for tp in tps:
            starts[tp.partition] = max(begin[tp], anchors[tp] - back[tp])
            self.consumer.seek(tp, starts[tp.partition])
        self.positions = dict(starts)
        self._refill_until = dict(checkpoint_offsets or {})
        return starts

    async def _offsets_holding(
        self,
        share: int,
        tps: list[TopicPartition],
        begin: dict[TopicPartition, int],
        anchors: dict[TopicPartition, int],
    ) -> dict[TopicPartition, int]:
        """How many offsets before each anchor hold about ``share`` transitions. One
        offset is one transition in the record form, but a worker's batch message holds
        hundreds (schemas/transition_batch.py): counting back ``share`` offsets would re-read
        most of the topic. So the last ``REFILL_PROBE`` offsets before the anchor are read
        and the transitions per offset they hold (transaction markers included) scale it."""
        spans = {tp: anchors[tp] - max(begin[tp], anchors[tp] - REFILL_PROBE) for tp in tps}
        counts = dict.fromkeys(tps, 0)
        left = [tp for tp in tps if spans[tp] > 0]
        for tp in left:
            self.consumer.seek(tp, anchors[tp] - spans[tp])
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            batches = await self.consumer.getmany(*left, timeout_ms=200, max_records=500)
            for tp, messages in batches.items():
                counts[tp] += sum(transition_batch.count(m.value) for m in messages
                                  if m.offset < anchors[tp])  # fmt: skip
            left = [tp for tp in left if await self.consumer.position(tp) < anchors[tp]]
        back = {}
        for tp in tps:
            per_offset = counts[tp] / spans[tp] if spans[tp] else 1.0
            back[tp] = share if per_offset <= 1.0 else math.ceil(share / per_offset)
        return back

    async def run(self, stopping: asyncio.Event, commit_every_s: float = 5.0) -> None:
        committed_at = time.monotonic()
        while not stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=200, max_records=5_000)
            transitions: list[Transition] = []
            slates: list[SlateTransition] = []
            letters: list[DeadLetter] = []
            for tp, messages in batches.items():
                for m in messages:
                    source = Source(tp.topic, tp.partition, m.offset)
                    # One transition, or a worker's batch of them (schemas/transition_batch.py).
                    records = decode_transitions(m.value, limits=self.limits, source=source)
                    if isinstance(records, DeadLetter):
                        if m.offset >= self._refill_until.get(tp.partition, 0):
                            letters.append(records)
                        continue
                    for record in records:
                        if isinstance(record, SlateTransition):
                            slates.append(record)
                        else:
                            transitions.append(record)
                if messages:
                    self.positions[tp.partition] = messages[-1].offset + 1
            for letter in letters:
                # Dead letters are sent before the positions that skip them are committed.
                await self.producer.send_and_wait(self.dead_letter_topic, encode(letter))
                metrics.DEAD_LETTERS.labels(letter.code).inc()
                log.warning("dead-lettered a transition: %s", letter.reason)
            if slates:
                metrics.TRANSITIONS_IN.labels("slate").inc(len(slates))
                if self.slates is not None:
                    self.slates.add(slates)
                    metrics.SLATES_STORED.set(len(self.slates))
                for observe in self.slate_observers:
                    observe(slates)
                self.newest_event_ts_ms = max(self.newest_event_ts_ms,
                                              max(t.ts_ms for t in slates))  # fmt: skip
            if transitions:
                for kind, count in Counter(t.kind for t in transitions).items():
                    metrics.TRANSITIONS_IN.labels(kind).inc(count)
                self.newest_event_ts_ms = max(self.newest_event_ts_ms,
                                              max(t.ts_ms for t in transitions))  # fmt: skip
                stored = self.replay.add(transitions)
                self.consumed += len(transitions)
                metrics.SAMPLES_STORED.inc(stored)
                metrics.REPLAY_SIZE.set(len(self.replay))
            if time.monotonic() - committed_at >= commit_every_s:
                await self.commit()
                committed_at = time.monotonic()

    async def _advance_past_markers(self) -> None:
        """Called between batches, when every record read is handled: the consumer's
        position (past transaction markers too, which getmany never returns) is ours."""
        for p, handled in self.positions.items():
            try:
                position = int(await self.consumer.position(TopicPartition(self.topic, p)))
            except Exception:  # unassigned mid-rebalance: keep what was handled
                continue
            self.positions[p] = max(handled, position)

    async def commit(self) -> None:
        await self._advance_past_markers()
        offsets = {TopicPartition(self.topic, p): o for p, o in self.positions.items()}
        if offsets:
            await self.consumer.commit(offsets)
            for tp, position in offsets.items():
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(self._lag(tp, position))

    def _lag(self, tp: TopicPartition, position: int) -> int:
        """Committed transitions not read yet: the last stable offset minus the position
        (which ``_advance_past_markers`` moves past transaction markers; the offset after
        the last record read never passes the worker's commit marker, and the lag stayed
        at >= 1 per partition for good, never showing caught up)."""
        end: int | None = self.consumer.last_stable_offset(tp)
        if end is None:
            end = self.consumer.highwater(tp)
        return max(0, (end if end is not None else position) - position)
