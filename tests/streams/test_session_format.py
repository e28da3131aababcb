"""The stored session's format (the sessions Table's values, hence its changelog): a
named record with a version; a worker restores the format before it and upgrades it; a
newer one stops the worker with a message instead of failing on every message."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from schemas.codec import encode
from schemas.records import (
    CartEvent,
    ClickEvent,
    LineItem,
    PurchaseEvent,
    Recommendation,
    RecommendedItem,
    SessionTick,
)
from schemas.topics import TopicRole
from streams.session import SessionFormatError, UserSession
from streams.state import WriteThrough
from tests.streams.test_assembler import T0, assembler, src


def format_1(raw: bytes) -> bytes:
    """The record as workers before format 2 stored it: a list of 15 positional slots
    (history, buffer, last_key, pending, seq, open, last_ts, last_seen_wall_ms,
    recent_ids, slates, last_produced_ms, slate_seq, closed_recs, early_impressions,
    waiting_recs), written here from that documented order."""
    d = orjson.loads(raw)
    return orjson.dumps(
        [d["history"], d["buffer"], d["last_key"], d["pending"], d["seq"], d["open"],
         d["last_ts"], d["last_seen_wall_ms"], d["recent_ids"], d["slates"],
         d["last_produced_ms"], d["slate_seq"], d["closed_recs"], d["early_impressions"],
         d["waiting_recs"]]
    )  # fmt: skip


def scripted_log() -> list[tuple[TopicRole, bytes, bytes, int]]:
    """Three shoppers: clicks, a recommendation answered by a click, a cart, a purchase,
    and the ticks that close their sessions; (topic role, key, value, wall ms)."""
    log: list[tuple[TopicRole, bytes, bytes, int]] = []
    for u in range(3):
        user = f"u{u}"
        t = T0 + u * 100
        rec = Recommendation(
            rec_id=f"r{u}", request_id=f"q{u}", user_id=user, model_version="7", policy="dqn",
            items=[RecommendedItem(item_id="sku-x", score=1.5, propensity=0.7),
                   RecommendedItem(item_id=f"sku-{u}", score=1.0, propensity=0.3)],
            requested_ts_ms=t + 1500, received_ts_ms=t + 1500, served_ts_ms=t + 1500,
        )  # fmt: skip
        events = [
            (TopicRole.CLICKS, ClickEvent(event_id=f"{user}-1", user_id=user, ts_ms=t,
                                          item_id="sku-a")),
            (TopicRole.CLICKS, ClickEvent(event_id=f"{user}-2", user_id=user, ts_ms=t + 1000,
                                          item_id=f"sku-{u}")),
            (TopicRole.RECOMMENDATIONS, rec),
            (TopicRole.CLICKS, ClickEvent(event_id=f"{user}-3", user_id=user, ts_ms=t + 2000,
                                          item_id="sku-x", rec_id=f"r{u}", position=0)),
            (TopicRole.CARTS, CartEvent(event_id=f"{user}-4", user_id=user, ts_ms=t + 3000,
                                        item_id="sku-x", action="add", quantity=1,
                                        unit_price=9.5)),
            (TopicRole.PURCHASES, PurchaseEvent(
                event_id=f"{user}-5", user_id=user, ts_ms=t + 4000, order_id=f"o{u}",
                items=[LineItem(item_id="sku-x", quantity=1, unit_price=9.5)])),
        ]  # fmt: skip
        log += [(role, user.encode(), encode(record), t + 5000) for role, record in events]
    for u in range(3):  # idle past the timeout: the last transitions and the slates close
        tick = SessionTick(user_id=f"u{u}", ts_ms=T0)
        log.append((TopicRole.SESSION_TICKS, f"u{u}".encode(), encode(tick), T0 + 10**8))
    return log


async def transitions(restore_at: int | None) -> list[bytes]:
    """Every transition of the scripted log; at message ``restore_at`` the table's values
    are rewritten in format 1, as a changelog written by the previous release restores."""
    a = assembler()
    table: dict[bytes, bytes] = {}
    sessions = WriteThrough(table)  # the per-event writes, over plain bytes
    out: list[bytes] = []
    for n, (role, key, value, wall_ms) in enumerate(scripted_log()):
        if n == restore_at:
            assert table and all(orjson.loads(v)["v"] == 2 for v in table.values())
            table.update({k: format_1(v) for k, v in table.items()})
        result = await a.handle(sessions, key=key, value=value, source=src(role, n),
                                wall_ms=wall_ms)  # fmt: skip
        out += [o.value for o in result.outputs if o.topic == "t.transitions"]
    assert all(orjson.loads(v)["v"] == 2 for v in table.values())  # upgraded on write
    return out


@pytest.mark.parametrize("restore_at", [3, 7, 12, 18])
async def test_a_changelog_in_the_previous_format_restores_with_identical_transitions(
    restore_at: int,
) -> None:
    uninterrupted = await transitions(None)
    kinds = sorted(orjson.loads(t)["kind"] for t in uninterrupted)
    assert kinds.count("slate") == 3 and kinds.count("organic") >= 12  # the log's worth
    assert await transitions(restore_at) == uninterrupted


def test_the_record_is_named_and_versioned_and_reads_back_equal() -> None:
    session = UserSession(history=[[3, 1, 0]], seq=4, open=True, last_ts=T0,
                          last_key=(T0, "e1", 0), recent_ids=[17])  # fmt: skip
    stored = orjson.loads(session.to_bytes())
    assert stored["v"] == 2 and stored["seq"] == 4 and stored["last_key"] == [T0, "e1", 0]
    assert UserSession.from_bytes(session.to_bytes()) == session
    assert UserSession.from_bytes(format_1(session.to_bytes())) == session


@pytest.mark.parametrize(
    "raw", [b'{"v": 3, "history": []}', b"[[], [], null]", b'{"history": []}',
            b'{"v": 2, "history": []}'],
    ids=["newer", "an-older-list", "no-version", "fields-missing"],
)  # fmt: skip
def test_a_format_this_worker_cannot_read_is_refused_with_what_to_do(raw: bytes) -> None:
    with pytest.raises(SessionFormatError, match="RECQ_STREAMS_APP_ID"):
        UserSession.from_bytes(raw)


def test_the_worker_stops_with_the_reason_instead_of_failing_per_message() -> None:
    code = (
        "import logging; logging.basicConfig()\n"
        "from streams.session import SessionFormatError\n"
        "from streams.worker import stop_on_unreadable_state\n"
        "stop_on_unreadable_state(SessionFormatError(3))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 78, run.stderr
    assert "stopping: a stored session has format 3" in run.stderr
