"""The smallest Faust pipeline on recq's event topics: consume each event and forward its
bytes to an output topic, under the same processing guarantee as the recq worker. Run by
bench/ingest.py as a baseline (`python bench/faust_forward.py worker`); configured through
BENCH_BOOTSTRAP, BENCH_PREFIX, BENCH_GUARANTEE, BENCH_LINGER_MS (the recq worker's
producer linger, so both batch their produce requests alike) and BENCH_TAKE (0: one event
at a time, as recq's agent; N: ``stream.noack_take(N)`` batches, to measure what
batching in Faust is worth).

BENCH_MODE=noop runs the no-op agent instead (baseline ``faust_noop``): every event read
through Faust's stream under the same guarantee and nothing done with it, the ceiling of
anything built on Faust's stream here. It produces nothing to time, so it writes its own
figures to BENCH_RESULT once BENCH_EXPECT events have come: the seconds and the process's
CPU seconds (user + system, all threads) from its first event to its last."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import faust

PREFIX = os.environ["BENCH_PREFIX"]
MODE = os.environ.get("BENCH_MODE", "forward")
app = faust.App(
    f"{PREFIX}faust-{MODE}",  # its own group: each mode reads every event
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


def write_result(events: int, seconds: float, cpu_s: float) -> None:
    Path(os.environ["BENCH_RESULT"]).write_text(
        f'{{"events": {events}, "seconds": {seconds}, "cpu_s": {cpu_s}}}'
    )


@app.agent(source)
async def forward(stream: Any) -> None:
    if MODE == "noop":
        expect, seen = int(os.environ["BENCH_EXPECT"]), 0
        started = cpu_started = 0.0
        async for _ in stream.events():
            if not seen:
                started, cpu_started = time.perf_counter(), time.process_time()
            seen += 1
            if seen == expect:
                took, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                write_result(seen - 1, took, cpu)
    elif TAKE:
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
