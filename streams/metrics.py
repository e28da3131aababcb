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
    "Interactions older than one already released (applied at once, see docs/streams.md).",
)
DUPLICATE_EVENTS = Counter(
    "recq_streams_duplicate_events_total", "Events skipped as repeats of a recent event_id."
)
ATTRIBUTIONS = Counter(
    "recq_streams_attributions_total",
    "Events (and impressions) carrying rec_id: attributed to an open reward window, "
    "unattributed (unknown rec_id, wrong slot or item), or late (the window had closed).",
    ["result"],
)
SLATES_CLOSED = Counter(
    "recq_streams_slates_closed_total",
    "Slate transitions written, by what closed the reward window (reward_wait, "
    "session_end, event_time, capacity: over MAX_OPEN_WINDOWS open for one shopper).",
    ["by"],
)
UNSHOWN_SLATES = Counter(
    "recq_streams_unshown_slates_total",
    "Reward windows closed with no slot rendered (explicit impressions): no transition.",
)
STATE_WRITES = Counter(
    "recq_streams_state_writes_total",
    "Session records written to the sessions Table's changelog (RECQ_STREAMS_STATE_WRITES="
    "commit: one per shopper touched per commit; event: one per event).",
)
CONSUMER_LAG = Gauge(
    "recq_streams_consumer_lag", "Highwater minus position, per source partition.",
    ["topic", "partition"],
)  # fmt: skip
