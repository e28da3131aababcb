"""Serving metrics (Prometheus)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_MS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000)
LATENCY = Histogram(
    "recq_serve_latency_ms",
    "Request produced (Kafka timestamp) to recommendation published, ms.",
    buckets=_MS,
)
MODEL_LATENCY = Histogram(
    "recq_serve_model_latency_ms", "onnxruntime time per micro-batch, ms.", buckets=_MS
)
BATCH_SIZE = Histogram(
    "recq_serve_batch_size", "Requests per micro-batch.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
ANSWERED = Counter("recq_serve_requests_total", "Requests answered, by source.", ["source"])
EXPIRED = Counter("recq_serve_expired_requests_total", "Requests too old to answer.")
DEAD_LETTERS = Counter(
    "recq_serve_dead_letters_total", "Invalid requests/events dead-lettered, by code.", ["code"]
)
SHOPPERS = Gauge("recq_serve_shoppers", "Shoppers whose state this member holds.")
REBUILT_EVENTS = Counter(
    "recq_serve_rebuilt_events_total", "Events re-read to rebuild assigned partitions' shoppers."
)
REBUILD_SECONDS = Gauge(
    "recq_serve_rebuild_seconds", "How long the last rebuild on assignment took, seconds."
)
