"""The smallest Faust pipeline on recq's event topics: consume each event and forward its
bytes to an output topic, under the same processing guarantee as the recq worker. Run by
bench/ingest.py as a baseline (`python bench/faust_forward.py worker`); configured through
BENCH_BOOTSTRAP, BENCH_PREFIX, BENCH_GUARANTEE, BENCH_LINGER_MS (the recq worker's
producer linger, so both batch their produce requests alike) and BENCH_TAKE (0: one event
at a time, as recq's agent; N: ``stream.noack_take(N)`` batches, to measure what
batching in Faust is worth)."""

from __future__ import annotations

import os
from typing import Any

import faust

PREFIX = os.environ["BENCH_PREFIX"]
app = faust.App(
    f"{PREFIX}faust-forward",
    broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
    store="memory://",
    processing_guarantee=os.environ.get("BENCH_GUARANTEE", "exactly_once"),
    web_enabled=False,
    datadir=os.environ.get("BENCH_DATADIR", "/tmp/recq-bench-faust-forward"),
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    producer_linger=float(os.environ.get("BENCH_LINGER_MS", "5")) / 1000,
)
TAKE = int(os.environ.get("BENCH_TAKE", "0"))
source = app.topic(
    *(f"{PREFIX}events.{kind}" for kind in ("click", "cart", "purchase")),
    key_type=bytes,
    value_type=bytes,
)
sink = app.topic(f"{PREFIX}forwarded", key_type=bytes, value_type=bytes)


@app.agent(source)
async def forward(stream: Any) -> None:
    if TAKE:
        # Each event acked by hand after its send, as a batched agent under recq's
        # exactly-once lock (streams/eos.py) would have to.
        async for batch in stream.noack_take(TAKE, within=0.01):
            for event in batch:
                await sink.send(key=event.key, value=event.value)
                event.ack()
    else:
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value)


if __name__ == "__main__":
    app.main()
