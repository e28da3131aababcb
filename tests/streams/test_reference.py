"""The worker's rules against the documented ones (docs/streams.md), without a broker:
the streams tests' scripted log (removals, repeats, out-of-order neighbours, multi-line
purchases, sessions ended by gaps) through the real TransitionAssembler, compared with
tests/reference_rules.py."""

from __future__ import annotations

from collections import Counter

import orjson

from schemas.codec import Limits, Source, encode
from schemas.records import CartEvent, Recommendation
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole
from streams.assembler import TransitionAssembler
from streams.session import Rules, Sessionizer, UserSession
from streams.state import WriteThrough
from tests.streams.test_assembler import ListVocabulary
from tests.streams_harness import (
    HISTORY_LENGTH,
    SESSION_TIMEOUT_S,
    canonical,
    expected_transitions,
    scripted_log,
)

CATALOG = TopicCatalog(prefix="r.", partitions=1)


def role_of(record: object) -> TopicRole:
    if isinstance(record, Recommendation):
        return TopicRole.RECOMMENDATIONS
    return EVENT_ROLES[record.type]  # type: ignore[attr-defined]


async def test_the_assembler_follows_the_readme_rules_on_the_scripted_log() -> None:
    log = scripted_log(users=40, events_per_user=12, seed=11)
    assert any(isinstance(e, CartEvent) and e.action == "remove" for e in log)
    assert sum(isinstance(e, Recommendation) for e in log) > 40
    rules = Rules(
        history_length=HISTORY_LENGTH,
        reorder_window_ms=3_000,
        session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
    )
    vocabulary = ListVocabulary()
    sessionizer = Sessionizer(rules)
    assembler = TransitionAssembler(
        catalog=CATALOG, sessionizer=sessionizer, vocabulary=vocabulary, limits=Limits()
    )
    table: dict[bytes, bytes] = {}
    sessions = WriteThrough(table)  # the per-event writes, over plain bytes
    wall = min(e.ts_ms for e in log if not isinstance(e, Recommendation))
    transitions = []
    for n, event in enumerate(log):  # all of them inside one reorder window
        result = await assembler.handle(
            sessions,
            key=event.user_id.encode(),
            value=encode(event),
            source=Source(CATALOG.name(role_of(event)), 0, n),
            wall_ms=wall,
        )
        transitions += [o.value for o in result.outputs]
    for user, raw in table.items():  # then every session idles out
        session = UserSession.from_bytes(raw)
        out = sessionizer.on_tick(session, user.decode(), wall_ms=wall + 10**9)
        transitions += [orjson.dumps(t) for t in out.transitions]
    item_of = {i: item for item, i in vocabulary.index.items()}.__getitem__

    actual = Counter(canonical(orjson.loads(t), item_of) for t in transitions)
    expected = expected_transitions(log)
    assert actual == expected, (
        f"lost {list((expected - actual).elements())[:3]}; "
        f"extra {list((actual - expected).elements())[:3]}"
    )
