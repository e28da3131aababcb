"""The co-view control: counts within a session's window, recency weights, popularity
only breaking ties, nothing carried across sessions."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.controls import CoView


def test_coview_scores_by_the_documented_counts_and_weights() -> None:
    c = CoView(6)
    for item in (0, 1, 2, 3):  # window 3: 3 co-occurs with 0, 1, 2; 0 with 1, 2, 3
        c.observe("u", item)
    c.end_session("u")
    c.observe("u", 4)  # a new session: 4 co-occurs with nothing before it
    c.observe("v", 3)
    c.observe("v", 5)
    # History [..., 2, 3]: 3 is the last item (weight 1.0), 2 the one before (0.6).
    score = c.scores([2, 3])
    pairs_of_3 = np.array([1, 1, 1, 0, 0, 1], float)  # with 0, 1, 2 (u) and 5 (v)
    pairs_of_2 = np.array([1, 1, 0, 1, 0, 0], float)
    popularity = np.array([1, 1, 1, 2, 1, 1], float)
    expected = 1.0 * pairs_of_3 + 0.6 * pairs_of_2 + popularity / 2 * 0.5
    assert score == pytest.approx(expected)
    assert int(np.argmax(score)) in (0, 1)  # co-viewed with both history items


def test_coview_without_history_items_it_has_seen_is_popularity() -> None:
    c = CoView(3)
    c.observe("u", 2)
    c.observe("u", 2)  # a repeat does not co-occur with itself
    assert c.scores([1]) == pytest.approx([0.0, 0.0, 0.5])
