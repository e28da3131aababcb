"""`recq replay` on the real broker: every readable row of a RetailRocket file reaches its
event topic once, keyed by user_id; unreadable rows are reported, not sent; with a speed
the events are paced and stamped with the wall clock, with 0 they keep their times."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console

from recq.replay import replay
from recq.topics import ensure_topics
from schemas.codec import decode
from schemas.records import Event
from schemas.topics import EVENT_ROLES, TopicCatalog
from tests.kafka_clients import kafka_options

pytestmark = pytest.mark.integration

LOG = """timestamp,visitorid,event,itemid,transactionid
1433221332000,v1,view,i1,
1433221332500,v2,view,i2,
1433221333000,v1,addtocart,i1,
1433221333500,v1,transaction,i1,t1
1433221333600,v3,refund,i9,
1433221334000,v2,view,i3,
"""


async def _read_all(bootstrap: str, catalog: TopicCatalog) -> list[tuple[bytes, object]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_options(), group_id=None)
    await consumer.start()
    try:
        tps = [
            TopicPartition(catalog.name(role), p)
            for role in EVENT_ROLES.values()
            for p in range(catalog.partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[bytes, object]] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += [(r.key, decode(r.value, Event)) for r in records]
        return out
    finally:
        await consumer.stop()


async def _run(tmp_path: Path, bootstrap: str, unique: str, speed: float) -> list:
    path = tmp_path / "events.csv"
    path.write_text(LOG)
    catalog = TopicCatalog(prefix=f"r{unique}{int(speed)}.", partitions=2)
    await ensure_topics(catalog, bootstrap_servers=bootstrap, client_options=kafka_options())
    sent = await replay(
        path, bootstrap=bootstrap, catalog=catalog, client_options=kafka_options(), speed=speed,
        limit=None, console=Console(quiet=True),
    )  # fmt: skip
    assert dict(sent) == {"click": 3, "cart": 1, "purchase": 1}
    return await _read_all(bootstrap, catalog)


async def test_replay_flat_out_keeps_times(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    got = await _run(tmp_path, kafka_bootstrap, unique, speed=0)
    by_id = {e.event_id: (key, e) for key, e in got}  # type: ignore[attr-defined]
    assert len(got) == len(by_id) == 5
    assert {k: (key, e.type, e.ts_ms) for k, (key, e) in by_id.items()} == {
        "rr-2": (b"v1", "click", 1433221332000),
        "rr-3": (b"v2", "click", 1433221332500),
        "rr-4": (b"v1", "cart", 1433221333000),
        "rr-5": (b"v1", "purchase", 1433221333500),
        "rr-7": (b"v2", "click", 1433221334000),
    }


async def test_replay_at_speed_paces_and_stamps_now(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    started = int(time.time() * 1000)
    got = await _run(tmp_path, kafka_bootstrap, unique, speed=4)  # 2 s of log in 0.5 s
    stamps = sorted(e.ts_ms for _, e in got)  # type: ignore[attr-defined]
    assert len(stamps) == 5 and stamps[0] >= started
    assert 400 <= stamps[-1] - stamps[0] <= 2000  # paced: the log's 2 s / 4, plus slack
