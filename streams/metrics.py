"""Prometheus metrics of the streams worker (process-wide, like every Prometheus client)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_IN = Counter("recq_streams_events_total", "Events consumed, by type.", ["type"])
TRANSITIONS_OUT = Counter(
    "recq_streams_transitions_total", "Transitions produced, by kind.", ["kind"]
)
DEAD_LETTERS = Counter(
    "recq_streams_dead_letters_total", "Messages dead-lettered, by reason code.", ["code"]
)
LATE_EVENTS = Counter(
    "recq_streams_late_events_total",
    "Interactions older than one already released (applied at once, see README).",
)
DUPLICATE_EVENTS = Counter(
    "recq_streams_duplicate_events_total", "Events skipped as repeats of a recent event_id."
)
FEEDBACK = Counter(
    "recq_streams_feedback_total",
    "Events carrying rec_id, by whether they were attributed to a shown item.",
    ["result"],
)
CONSUMER_LAG = Gauge(
    "recq_streams_consumer_lag", "Highwater minus position, per source partition.",
    ["topic", "partition"],
)  # fmt: skip
