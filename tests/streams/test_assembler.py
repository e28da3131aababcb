"""The per-message logic the agent runs, with an in-memory table and vocabulary."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from schemas.codec import Limits, Source, encode
from schemas.records import (
    ClickEvent,
    DeadLetter,
    Recommendation,
    RecommendedItem,
    SessionTick,
    SlateTransition,
)
from schemas.topics import TopicCatalog, TopicRole
from streams.assembler import TransitionAssembler
from streams.session import Rules, Sessionizer
from streams.state import WriteThrough

T0 = 1_790_000_000_000
CATALOG = TopicCatalog(prefix="t.", partitions=2)


class ListVocabulary:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    async def indices(self, item_ids: Sequence[str]) -> list[int]:
        return [self.index.setdefault(i, len(self.index)) for i in item_ids]


def assembler() -> TransitionAssembler:
    return TransitionAssembler(
        catalog=CATALOG,
        sessionizer=Sessionizer(Rules(reorder_window_ms=0, session_timeout_ms=60_000)),
        vocabulary=ListVocabulary(),
        limits=Limits(),
    )


def src(role: TopicRole, offset: int = 0) -> Source:
    return Source(CATALOG.name(role), 0, offset)


async def test_events_become_transitions_and_bad_input_dead_letters() -> None:
    a = assembler()
    table: dict[bytes, bytes] = {}
    sessions = WriteThrough(table)  # the per-event writes, over plain bytes
    outputs = []
    for n, item in enumerate(["sku-a", "sku-b", "sku-c"]):
        event = ClickEvent(event_id=f"e{n}", user_id="u1", ts_ms=T0 + n * 1000, item_id=item)
        result = await a.handle(
            sessions,
            key=b"u1",
            value=encode(event),
            source=src(TopicRole.CLICKS, n),
            wall_ms=T0 + n * 1000,
        )
        outputs += result.outputs
    # Each transition waits for the next event to decide `done`.
    assert [o.topic for o in outputs] == ["t.transitions", "t.transitions"]
    first = orjson.loads(outputs[0].value)
    assert outputs[0].key == b"u1"
    assert (first["action"], first["reward"], first["done"], first["schema_version"]) == (
        0,
        0.2,
        False,
        1,
    )

    tick = SessionTick(user_id="u1", ts_ms=T0)
    closed = await a.handle(
        sessions,
        key=b"u1",
        value=encode(tick),
        source=src(TopicRole.SESSION_TICKS),
        wall_ms=T0 + 10**6,
    )
    last = orjson.loads(closed.outputs[0].value)
    assert (last["action"], last["done"]) == (2, True)

    bad = await a.handle(
        sessions, key=b"u1", value=b"{oops", source=src(TopicRole.CARTS, 7), wall_ms=T0
    )
    assert [o.topic for o in bad.outputs] == ["t.dead-letter"]
    letter = DeadLetter.model_validate_json(bad.outputs[0].value)
    assert (letter.code, letter.original, letter.source_offset) == ("malformed_json", b"{oops", 7)

    event = ClickEvent(event_id="x", user_id="u2", ts_ms=T0, item_id="sku-a")
    wrong_key = await a.handle(
        sessions, key=b"u3", value=encode(event), source=src(TopicRole.CLICKS), wall_ms=T0
    )
    letter = DeadLetter.model_validate_json(wrong_key.outputs[0].value)
    assert letter.code == "invalid_value" and "keyed by user_id" in letter.reason
    assert b"u2" not in table  # nothing applied for a mis-keyed event


async def test_recommendation_then_click_yields_a_slate_transition() -> None:
    a = assembler()
    table: dict[bytes, bytes] = {}
    sessions = WriteThrough(table)  # the per-event writes, over plain bytes
    rec = Recommendation(
        rec_id="r1", request_id="q1", user_id="u1", model_version="7", policy="dqn",
        items=[RecommendedItem(item_id="sku-x", score=1.5, propensity=0.7),
               RecommendedItem(item_id="sku-y", score=1.0, propensity=0.3)],
        requested_ts_ms=T0, received_ts_ms=T0, served_ts_ms=T0,
    )  # fmt: skip
    assert (
        await a.handle(
            sessions,
            key=b"u1",
            value=encode(rec),
            source=src(TopicRole.RECOMMENDATIONS),
            wall_ms=T0,
        )
    ).outputs == []
    click = ClickEvent(
        event_id="c", user_id="u1", ts_ms=T0 + 500, item_id="sku-x", rec_id="r1", position=0
    )
    await a.handle(
        sessions, key=b"u1", value=encode(click), source=src(TopicRole.CLICKS), wall_ms=T0 + 500
    )
    # Idle past the session timeout: the organic transition and the slate are written.
    tick = SessionTick(user_id="u1", ts_ms=T0)
    result = await a.handle(
        sessions, key=b"u1", value=encode(tick), source=src(TopicRole.SESSION_TICKS),
        wall_ms=T0 + 10**8,
    )  # fmt: skip
    slates = [SlateTransition.model_validate_json(o.value) for o in result.outputs
              if b'"slate"' in o.value]  # fmt: skip
    assert [(s.items, s.propensities, s.responses, s.rewards, s.model_version) for s in slates] == [
        ([0, 1], [0.7, 0.3], [1, 0], [0.2, 0.0], "7")
    ]


async def test_an_impression_is_validated_dead_lettered_and_marks_positions() -> None:
    a = assembler()
    table: dict[bytes, bytes] = {}
    sessions = WriteThrough(table)  # the per-event writes, over plain bytes
    bad = b'{"type": "impression", "event_id": "i1", "user_id": "u1", "ts_ms": %d, ' % T0
    bad += b'"rec_id": "r1", "positions": [0, 0]}'
    result = await a.handle(
        sessions, key=b"u1", value=bad, source=src(TopicRole.IMPRESSIONS), wall_ms=T0
    )
    letter = DeadLetter.model_validate_json(result.outputs[0].value)
    assert letter.code == "invalid_value" and "distinct" in letter.reason
    assert letter.original == bad and letter.expected == "impression"
    good = bad.replace(b"[0, 0]", b"[1]")
    assert (
        await a.handle(
            sessions, key=b"u1", value=good, source=src(TopicRole.IMPRESSIONS), wall_ms=T0
        )
    ).outputs == []
    assert b"u1" in table  # kept until its recommendation arrives
