"""How long a serving member takes to rebuild its shoppers after a restart
(``inference.rebuild``): the event topics hold --shoppers shoppers' histories
(--events each, clicks and a cart add), and the whole window is re-read into serving's
state (decode, the shared state rules, popularity) for every partition. Side by side,
in the same run: a bare consumer reading the same messages without decoding them, the
floor Kafka and aiokafka set here. Prints JSON lines (bench/report.py):

    .venv/bin/python bench/serve_rebuild.py [--shoppers 100000] [--events 5]

Starts the embedded broker unless RECQ_BOOTSTRAP_SERVERS is set; the broker shares the
machine's cores with this process.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import broker
from bench.report import figure
from inference.policy import Popularity
from inference.rebuild import StateRebuilder
from inference.recommender import Recommender
from inference.state import ShopperStates
from recq.topics import ensure_topics
from schemas.codec import Limits, encode
from schemas.exploration import Policy
from schemas.records import CartEvent, ClickEvent
from schemas.topics import EVENT_ROLES, TopicCatalog

PARTITIONS = 4


async def produce(bootstrap: str, catalog: TopicCatalog, shoppers: int, events: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=512 * 1024)  # fmt: skip
    await producer.start()
    clicks, carts = catalog.name(EVENT_ROLES["click"]), catalog.name(EVENT_ROLES["cart"])
    now, sent = int(time.time() * 1000) - 600_000, 0
    try:
        for u in range(shoppers):
            user = f"shopper-{u}"
            key = user.encode()
            for j in range(events - 1):
                click = ClickEvent(event_id=f"{user}-{j}", user_id=user, ts_ms=now + j,
                                   item_id=f"sku-{(u * 7 + j) % 50_000}")  # fmt: skip
                await producer.send(clicks, encode(click), key=key)
            cart = CartEvent(event_id=f"{user}-a", user_id=user, ts_ms=now + events,
                             item_id=f"sku-{u % 50_000}", action="add")  # fmt: skip
            await producer.send(carts, encode(cart), key=key)
            sent += events
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def ends_of(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def bare_read(bootstrap: str, ends: dict[TopicPartition, int]) -> float:
    """Seconds to read every message up to ``ends`` with no decoding: the floor."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20,
                                fetch_max_wait_ms=50)  # fmt: skip
    await consumer.start()
    try:
        start = time.monotonic()
        todo = {tp: end for tp, end in ends.items() if end > 0}
        consumer.assign(list(todo))
        await consumer.seek_to_beginning(*todo)
        while todo:
            await consumer.getmany(*todo, timeout_ms=500, max_records=10_000)
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
        return time.monotonic() - start
    finally:
        await consumer.stop()


async def run(bootstrap: str, shoppers: int, events: int) -> None:
    catalog = TopicCatalog(prefix=f"rb{uuid.uuid4().hex[:8]}.", partitions=PARTITIONS)
    await ensure_topics(catalog, bootstrap_servers=bootstrap)
    start = time.monotonic()
    sent = await produce(bootstrap, catalog, shoppers, events)
    print(f"# produced {sent} events in {time.monotonic() - start:.1f} s", file=sys.stderr)
    ends = await ends_of(bootstrap, [catalog.name(role) for role in EVENT_ROLES.values()])
    bare_s = await bare_read(bootstrap, ends)

    # Serving's own path: a recommender learning each event (state and popularity).
    recommender = Recommender(states=ShopperStates(), popularity=Popularity(),
                              policy=Policy())  # fmt: skip
    states = recommender.states

    rebuilder = StateRebuilder(bootstrap, {}, lookback_s=3600, limits=Limits())
    await rebuilder.start()
    try:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rebuilt = await rebuilder.rebuild(ends, recommender.learn)
    finally:
        await rebuilder.stop()
    assert len(states) == shoppers and rebuilt.events == sent, (len(states), rebuilt)
    common = {"shoppers": shoppers, "events": sent, "partitions": PARTITIONS}
    figure("serve_rebuild", "rebuild_s", rebuilt.seconds, "s", baseline="bare_read",
           baseline_value=bare_s, **common)  # fmt: skip
    figure("serve_rebuild", "rebuild_events_per_s", sent / rebuilt.seconds, "1/s",
           baseline="bare_read", baseline_value=sent / bare_s, **common)  # fmt: skip
    rss_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    figure("serve_rebuild", "state_memory_growth_mb", rss_mb, "MB", **common)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shoppers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5, help="events per shopper (>= 2)")
    args = parser.parse_args()
    # The embedded broker starts outside the event loop (its readiness probe runs its own).
    with broker() as bootstrap:
        asyncio.run(run(bootstrap, args.shoppers, max(2, args.events)))


if __name__ == "__main__":
    main()
