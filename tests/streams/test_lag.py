"""An input partition is caught up when the agent has handled it to its end, whatever
the consumer has fetched ahead into faust's buffers."""

from __future__ import annotations

from streams.worker import handled_lag


def test_lag_counts_what_the_agent_has_not_handled() -> None:
    assert handled_lag(None, 5, 5) is None  # no highwater yet: unknown
    assert handled_lag(0, None, None) == 0  # an empty partition is caught up
    # After a restart, before the agent's first message there: from the committed offset
    # (the consumer may already have fetched all 40 into a buffer: still 30 ahead).
    assert handled_lag(40, None, 10) == 30
    assert handled_lag(40, None, None) == 40  # a fresh group: all of it is ahead
    assert handled_lag(40, 25, 10) == 15  # handled past the commit
    assert handled_lag(40, 40, 38) == 0
    assert handled_lag(40, 12, 30) == 10  # an older handled offset (before a rebalance)
