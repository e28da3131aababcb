"""Freshness bookkeeping: each live event is observed once, at the swap of the first
snapshot that trained through its event time; and the quantile the demo reads back."""

from __future__ import annotations

import pytest

from inference.freshness import Freshness
from recq.scrape import histogram_quantile


def test_each_event_is_measured_at_the_first_swap_that_covers_it() -> None:
    f = Freshness()
    for ts in (1_000, 3_000, 2_000, 5_000):  # out of order: kept sorted
        f.event(ts)
    # A snapshot trained through t=2,500 swaps in at t=9,000: events at 1 s and 2 s
    assert f.swapped(2_500, at_ms=9_000) == [8.0, 7.0]
    assert f.swapped(2_500, at_ms=10_000) == []  # never twice
    assert f.swapped(None, at_ms=10_000) == []  # a manifest without trained_through
    f.event(4_000)
    assert f.swapped(6_000, at_ms=12_000) == [9.0, 8.0, 7.0]
    assert len(f) == 0


def test_pending_events_are_bounded() -> None:
    f = Freshness(limit=3)
    for ts in range(10):
        f.event(ts)
    assert len(f) == 3
    assert f.swapped(100, at_ms=1_000) == [0.993, 0.992, 0.991]


def test_histogram_quantile_interpolates_inside_a_bucket() -> None:
    name = "x_seconds"
    scraped = {f'{name}_bucket{{le="{le}"}}': c for le, c in
               (("1.0", 0.0), ("2.0", 10.0), ("5.0", 30.0), ("+Inf", 40.0))}  # fmt: skip
    # rank 20 of 40 falls halfway through (2, 5]: 10 below, 20 inside
    assert histogram_quantile(scraped, name, 0.5) == pytest.approx(3.5)
    assert histogram_quantile(scraped, name, 0.25) == pytest.approx(2.0)
    assert histogram_quantile(scraped, name, 0.99) == 5.0  # in +Inf: the largest bound
    assert histogram_quantile({}, name, 0.5) is None
