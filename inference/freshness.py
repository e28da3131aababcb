"""Freshness: how long an event takes to reach shoppers through a served snapshot.

For every event a serving member reads live (not replayed history), it keeps the event
time until a snapshot that trained on it is swapped in: one whose manifest's
``trained_through.event_ts_ms`` (the newest transition the learner had read when it
exported) is at or past it. Then ``swap time - event time`` is observed in
``recq_serve_freshness_seconds``. That spans the whole loop: the streams worker's reorder
window and transaction, the learner's read, training until the next snapshot, export,
the gate, the announcement and the member's verification. Event time is the shop's
clock, so the figure is meaningful for live traffic on synchronised clocks.

Pending event times are bounded (``limit``, oldest dropped and counted): while no
snapshot is promoted they would otherwise grow without end.
"""

from __future__ import annotations

import heapq
import threading
import time

from prometheus_client import Counter, Gauge, Histogram

FRESHNESS = Histogram(
    "recq_serve_freshness_seconds",
    "Event time to the swap of the first snapshot that trained on it, seconds.",
    buckets=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 45, 60, 90, 120, 300, 600),
)
TRAINED_LAG = Gauge(
    "recq_serve_snapshot_trained_lag_seconds",
    "At the last swap: swap time minus the newest event time the snapshot trained on.",
)
DROPPED = Counter(
    "recq_serve_freshness_dropped_total", "Pending event times dropped past the bound."
)


class Freshness:
    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._pending: list[int] = []  # event times (ms), a min-heap
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def event(self, ts_ms: int) -> None:
        # O(log n) per event on the serving member's read path (a sorted list cost a
        # memmove of the whole backlog per event while no snapshot was promoted).
        with self._lock:
            if len(self._pending) < self.limit:
                heapq.heappush(self._pending, ts_ms)
                return
            heapq.heappushpop(self._pending, ts_ms)  # drop the oldest
        DROPPED.inc()

    def swapped(self, trained_through_ms: int | None, at_ms: int | None = None) -> list[float]:
        """A snapshot trained through ``trained_through_ms`` now serves: the freshness
        (seconds) of every pending event it covers, each observed once."""
        if trained_through_ms is None:
            return []
        now = int(time.time() * 1000) if at_ms is None else at_ms
        TRAINED_LAG.set(max(0.0, (now - trained_through_ms) / 1000))
        covered: list[int] = []
        with self._lock:
            while self._pending and self._pending[0] <= trained_through_ms:
                covered.append(heapq.heappop(self._pending))
        seconds = [max(0.0, (now - ts) / 1000) for ts in covered]
        for s in seconds:
            FRESHNESS.observe(s)
        return seconds
