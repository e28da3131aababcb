"""Prometheus metrics of the streams worker (process-wide, like every Prometheus client)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
BATCHES = Counter(
    "recq_streams_batches_total",
    "Batches committed, by what closed them: size (RECQ_STREAMS_BATCH_MAX events), wait "
    "(RECQ_STREAMS_BATCH_WAIT_MS), or commit (faust's interval, a rebalance or shutdown).",
    ["closed_by"],
)
BATCH_EVENTS = Histogram(
    "recq_streams_batch_events", "Events per committed batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)  # fmt: skip
TRANSITION_MESSAGES = Counter(
    "recq_streams_transition_messages_total",
    "Messages written to the transitions topic (RECQ_TRANSITIONS_FORMAT=batch: a few per "
    "batch and partition; record: one per transition).",
)
COMMIT_SECONDS = Histogram(
    "recq_streams_commit_seconds",
    "Closing a batch: its sessions, outputs and offsets written and committed (the agent "
    "waits meanwhile).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)  # fmt: skip
