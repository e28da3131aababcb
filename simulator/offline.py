"""A shop log without Kafka: returning shoppers browsing on their own (no recommender)
for several sessions each, written as recq JSONL (one event per line, as produced to the
event topics). For ``recq evaluate`` and ``recq replay`` when no real log is at hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from schemas.codec import encode
from simulator.session import run_session
from simulator.shop import Catalog, shoppers

SESSION_GAP_MS = 3_600_000  # an hour between a shopper's sessions


def write_log(
    path: Path,
    *,
    n_shoppers: int,
    sessions_each: int,
    items: int,
    categories: int,
    seed: int,
    start_ms: int = 1_700_000_000_000,
) -> int:
    """Writes the log; returns the number of events. Deterministic by ``seed``."""
    shop = Catalog.generate(items, categories, seed)
    rng = np.random.default_rng(seed + 7)
    events = []
    for s in shoppers(shop, n_shoppers, seed + 1):
        at = start_ms + int(rng.integers(0, SESSION_GAP_MS))
        for _ in range(sessions_each):
            outcome = run_session(shop, s, rng, None, at)
            events += outcome.events
            at = (events[-1].ts_ms if outcome.events else at) + SESSION_GAP_MS
    events.sort(key=lambda e: e.ts_ms)
    with path.open("wb") as f:
        for e in events:
            f.write(encode(e) + b"\n")
    return len(events)
