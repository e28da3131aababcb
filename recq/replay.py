"""``recq replay LOG``: produce a log (RetailRocket events.csv or recq JSONL) to the event
topics, keyed by user_id, at the log's own pace scaled by ``speed`` (1 = real time,
60 = an hour a minute, 0 = as fast as the broker takes them).

With ``speed`` > 0 each event is stamped with the wall-clock time it is sent at, so the
streams worker sees a live stream whose spacing is the original one divided by
``speed`` (its session timeout and reorder window apply as in production). With 0 the
original timestamps are kept (a backfill of history)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recq.evaluation.logs import Skipped, read_events
from schemas.codec import encode
from schemas.topics import EVENT_ROLES, TopicCatalog


async def replay(
    log: Path,
    *,
    bootstrap: str,
    catalog: TopicCatalog,
    client_options: dict[str, object],
    speed: float,
    limit: int | None,
    console: Console,
) -> Counter[str]:
    if speed < 0:
        raise ValueError("--speed must be >= 0 (0: as fast as possible)")
    skipped = Skipped()
    with console.status(f"reading {log}..."):
        events = [e for _, e in read_events(log, skipped)][:limit]
    if skipped.total:
        console.print(f"[yellow]not replayed, {skipped.total} rows:[/] {skipped.describe()}")
    events.sort(key=lambda e: e.ts_ms)  # RetailRocket is not sorted by time
    sent: Counter[str] = Counter()
    if not events:
        return sent
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **client_options)
    await producer.start()
    first_ts, wall_start = events[0].ts_ms, time.time()
    try:
        with Progress(
            TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console,
        ) as progress:  # fmt: skip
            task = progress.add_task("replay", total=len(events))
            for n, event in enumerate(events):
                if speed > 0:
                    due = wall_start + (event.ts_ms - first_ts) / 1000 / speed
                    if (wait := due - time.time()) > 0:
                        await asyncio.sleep(wait)
                live = (
                    event.model_copy(update={"ts_ms": int(time.time() * 1000)})
                    if speed > 0
                    else event
                )
                await producer.send(
                    catalog.name(EVENT_ROLES[event.type]), encode(live),
                    key=event.user_id.encode(),
                )  # fmt: skip
                sent[event.type] += 1
                if n % 500 == 0:
                    progress.update(task, completed=n)
            await producer.flush()
            progress.update(task, completed=len(events))
    finally:
        await producer.stop()
    return sent
