"""The transport alone: a consumer-group member on rec-requests that answers each request
at once with an empty recommendation (no state, no model, no policy, no batching wait),
with the same client settings as `recq serve`. bench/serve.py measures it at the same
offered rates as the floor that Kafka and the Python clients set on this machine.

    python bench/kafka_echo.py BOOTSTRAP PREFIX
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.codec import decode, encode
from schemas.records import Recommendation, RecRequest
from schemas.topics import TopicCatalog, TopicRole


async def echo(bootstrap: str, prefix: str) -> None:
    catalog = TopicCatalog(prefix=prefix, partitions=4)
    consumer = AIOKafkaConsumer(
        catalog.name(TopicRole.REC_REQUESTS), bootstrap_servers=bootstrap,
        group_id=f"{prefix}echo", enable_auto_commit=True, auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    out = catalog.name(TopicRole.RECOMMENDATIONS)
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    await producer.start()
    await consumer.start()
    try:
        while not stopping.is_set():
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                received = int(time.time() * 1000)
                for m in messages:
                    request = decode(m.value, RecRequest)
                    if not isinstance(request, RecRequest):
                        continue
                    answer = Recommendation(
                        rec_id=f"echo-{request.request_id}", request_id=request.request_id,
                        user_id=request.user_id, items=[], model_version="echo",
                        policy="echo", requested_ts_ms=request.ts_ms, received_ts_ms=received,
                        served_ts_ms=int(time.time() * 1000),
                    )  # fmt: skip
                    await producer.send(out, encode(answer), key=m.key)
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(echo(sys.argv[1], sys.argv[2]))
