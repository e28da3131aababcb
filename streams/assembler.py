"""Turns one consumed message into session updates and outputs. No Faust in here: the
agent feeds it messages and writes back what it returns, so the logic is tested with an
in-memory table and vocabulary as well as on the real broker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from kafkaio.vocabulary import Vocabulary
from schemas.codec import Limits, Source, dead_letter, decode, encode
from schemas.features import interactions_of
from schemas.records import (
    EVENT_CLASSES,
    CartEvent,
    ClickEvent,
    DeadLetter,
    ImpressionEvent,
    PurchaseEvent,
    Recommendation,
    SessionTick,
)
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole
from streams import metrics
from streams.session import SYNCED, Interaction, Outcome, Sessionizer, Sync
from streams.state import Sessions

InputRecord = (
    ClickEvent | CartEvent | PurchaseEvent | ImpressionEvent | Recommendation | SessionTick
)


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Result:
    """What one message gave: transitions (the single-record dicts, in the order written;
    encoded by the worker's batch, streams/batch.py) and dead letters."""

    transitions_topic: str = ""
    transitions: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[Output] = field(default_factory=list)

    @property
    def outputs(self) -> list[Output]:
        """Every output as its own message (the ``record`` form of the transitions)."""
        records = [as_record(self.transitions_topic, t) for t in self.transitions]
        return [*records, *self.dead_letters]


def as_record(topic: str, transition: dict[str, Any]) -> Output:
    """A transition as its own message (``RECQ_TRANSITIONS_FORMAT=record``): keyed by
    its shopper, so the key's partition keeps a shopper's transitions in order."""
    return Output(topic, transition["user_id"].encode(), orjson.dumps(transition))


class TransitionAssembler:
    """Decodes, dead-letters, sessionizes; one instance per worker."""

    def __init__(
        self,
        *,
        catalog: TopicCatalog,
        sessionizer: Sessionizer,
        vocabulary: Vocabulary,
        limits: Limits,
    ) -> None:
        self.catalog = catalog
        self.sessionizer = sessionizer
        self.vocabulary = vocabulary
        self.limits = limits
        #: Wall clock (ms) at which this worker began processing; see Sessionizer.on_event.
        self.resumed_ms = 0
        self.transitions_topic = catalog.name(TopicRole.TRANSITIONS)
        self.dead_letter_topic = catalog.name(TopicRole.DEAD_LETTER)
        # source topic -> the record it carries
        self._inputs: dict[str, type[InputRecord]] = {
            catalog.name(role): EVENT_CLASSES[kind] for kind, role in EVENT_ROLES.items()
        }
        self._inputs[catalog.name(TopicRole.IMPRESSIONS)] = ImpressionEvent
        self._inputs[catalog.name(TopicRole.RECOMMENDATIONS)] = Recommendation
        self._inputs[catalog.name(TopicRole.SESSION_TICKS)] = SessionTick
        self._source_topics = frozenset(self._inputs)

    @property
    def source_topics(self) -> frozenset[str]:
        return self._source_topics

    async def handle(
        self,
        sessions: Sessions,
        *,
        key: bytes | None,
        value: bytes | None,
        source: Source,
        wall_ms: int,
        produced_ms: int = 0,
        synced: Sync = SYNCED,
    ) -> Result:
        """Process one message; ``sessions`` holds each user's session (streams/state.py:
        the commit's cache in the worker, ``WriteThrough`` over a mapping of bytes).
        ``produced_ms`` is the message's Kafka timestamp; ``synced`` how far every input
        partition of its group has been read (see ``streams.session.Sync``)."""
        expected = self._inputs[source.topic or ""]
        record: InputRecord | DeadLetter = decode(
            value, expected, limits=self.limits, source=source, now_ms=wall_ms
        )
        if isinstance(record, DeadLetter):
            return self._dead(record, key)
        user = record.user_id.encode()
        if key != user:
            # Co-partitioning by user_id is what puts a user's state on this worker.
            letter = dead_letter(
                value,
                expected,
                "invalid_value",
                f"message key {key!r} is not the record's user_id {record.user_id!r}: "
                "recq topics must be keyed by user_id",
                source=source,
                now_ms=wall_ms,
            )
            return self._dead(letter, key)

        session = sessions.load(user)
        if isinstance(record, SessionTick):
            outcome = self.sessionizer.on_tick(
                session, record.user_id, wall_ms, self.resumed_ms, synced
            )
        elif isinstance(record, Recommendation):
            outcome = Outcome()
            if record.items:
                outcome = self.sessionizer.on_recommendation(
                    session,
                    rec_id=record.rec_id,
                    served_ts_ms=record.served_ts_ms,
                    items=await self.vocabulary.indices([i.item_id for i in record.items]),
                    propensities=[i.propensity for i in record.items],
                    policy=record.policy,
                    model_version=record.model_version,
                    wall_ms=wall_ms,
                    produced_ms=produced_ms,
                    resumed_ms=self.resumed_ms,
                    synced=synced,
                    user_id=record.user_id,
                )
        elif isinstance(record, ImpressionEvent):
            metrics.EVENTS_IN.labels(record.type).inc()
            outcome = self.sessionizer.on_impression(
                session, record.rec_id, record.positions, record.ts_ms
            )
        else:
            metrics.EVENTS_IN.labels(record.type).inc()
            interactions = await self._interactions(record, wall_ms, produced_ms)
            outcome = self.sessionizer.on_event(
                session, record.user_id, interactions, wall_ms, self.resumed_ms, synced
            )
        sessions.save(user, session, source)
        return self._emit(outcome)

    async def _interactions(
        self, event: ClickEvent | CartEvent | PurchaseEvent, wall_ms: int, produced_ms: int
    ) -> list[Interaction]:
        touched = interactions_of(event)
        indices = await self.vocabulary.indices([x.item_id for x in touched])
        return [
            Interaction(
                event.ts_ms,
                event.event_id,
                x.line,
                idx,
                x.code,
                event.rec_id,
                x.last_line,
                arrival_ms=wall_ms,
                produced_ms=produced_ms,
                position=event.position,
                revenue=x.revenue,
            )
            for x, idx in zip(touched, indices, strict=True)
        ]

    def _emit(self, outcome: Outcome) -> Result:
        result = Result(self.transitions_topic, outcome.transitions)
        for transition in outcome.transitions:
            transition["schema_version"] = 1
            metrics.TRANSITIONS_OUT.labels(transition["kind"]).inc()
            if transition["kind"] == "slate":
                metrics.SLATES_CLOSED.labels(transition["closed_by"]).inc()
        if outcome.late:
            metrics.LATE_EVENTS.inc(outcome.late)
        if outcome.duplicates:
            metrics.DUPLICATE_EVENTS.inc(outcome.duplicates)
        for result_label, count in (
            ("attributed", outcome.attributed),
            ("unattributed", outcome.unattributed),
            ("late", outcome.late_rewards),
        ):
            if count:
                metrics.ATTRIBUTIONS.labels(result_label).inc(count)
        if outcome.unshown:
            metrics.UNSHOWN_SLATES.inc(outcome.unshown)
        return result

    def _dead(self, letter: DeadLetter, key: bytes | None) -> Result:
        metrics.DEAD_LETTERS.labels(letter.code).inc()
        return Result(dead_letters=[Output(self.dead_letter_topic, key, encode(letter))])
