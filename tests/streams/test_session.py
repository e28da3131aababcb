"""The sessionizer's rules as pure functions, with hypothesis properties."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.features import EVENT_CODES
from schemas.records import Transition
from streams.session import CAUGHT_UP, Interaction, Outcome, Rules, Sessionizer, Sync, UserSession

RULES = Rules(reorder_window_ms=2_000, session_timeout_ms=60_000, reward_wait_ms=30_000)
T0 = 1_790_000_000_000


def click(
    ts: int, item: int, event_id: str | None = None, rec_id: str | None = None
) -> list[Interaction]:
    return [Interaction(T0 + ts, event_id or f"e{ts}", 0, item, EVENT_CODES["click"], rec_id)]


def cart(ts: int, item: int) -> list[Interaction]:
    return [Interaction(T0 + ts, f"e{ts}", 0, item, EVENT_CODES["cart"])]


def purchase(ts: int, *items: int) -> list[Interaction]:
    return [
        Interaction(T0 + ts, f"e{ts}", n, item, EVENT_CODES["purchase"], None, n == len(items) - 1)
        for n, item in enumerate(items)
    ]


def run(
    events: list[list[Interaction]], rules: Rules = RULES, arrivals: list[int] | None = None
) -> tuple[list[dict[str, Any]], Outcome]:
    """Feed events in the given order, arriving at the given wall-clock times (default:
    at their event time), persisting the session between messages as the worker does;
    then go idle long enough for everything to be released and the session closed."""
    sessionizer = Sessionizer(rules)
    raw = UserSession().to_bytes()
    total = Outcome()
    transitions: list[dict[str, Any]] = []
    walls = arrivals or [interactions[0].ts_ms for interactions in events]
    for interactions, wall in zip(events, walls, strict=True):
        session = UserSession.from_bytes(raw)
        out = sessionizer.on_event(session, "u1", interactions, wall_ms=wall)
        raw = session.to_bytes()
        transitions += out.transitions
        total.late += out.late
        total.duplicates += out.duplicates
        total.attributed += out.attributed
        total.unattributed += out.unattributed
    session = UserSession.from_bytes(raw)
    end = max(walls) + rules.reorder_window_ms + rules.session_timeout_ms
    out = sessionizer.on_tick(session, "u1", wall_ms=end)
    transitions += out.transitions
    assert not session.buffer and not session.open
    return transitions, total


def test_in_order_session_transitions_are_exact() -> None:
    events = [click(0, 5), click(1_000, 7), cart(3_000, 7), purchase(9_000, 7, 9)]
    got, counts = run(events)
    assert counts.late == counts.duplicates == 0
    assert [(t["seq"], t["action"], t["reward"], t["done"]) for t in got] == [
        (0, 5, 0.2, False),
        (1, 7, 0.2, False),
        (2, 7, 0.5, False),
        (3, 7, 1.0, False),
        (4, 9, 1.0, True),  # checkout ends the session
    ]
    # state = interactions before, next_state = with this one; ages bucketed from now
    assert got[0]["state"] == {"items": [], "events": [], "ages": []}
    assert got[0]["next_state"] == {"items": [5], "events": [1], "ages": [1]}
    assert got[2]["state"] == {"items": [5, 7], "events": [1, 1], "ages": [1, 1]}
    assert got[4]["state"]["items"] == [5, 7, 7, 7]
    assert got[4]["state"]["ages"] == [1, 1, 1, 1]  # 9 s old -> bucket 1 (< 10 s)
    assert got[4]["next_state"]["events"] == [1, 1, 2, 3, 3]
    for t in got:
        Transition.model_validate(t, strict=False)


def test_inactivity_gap_ends_the_session() -> None:
    events = [click(0, 1), click(1_000, 2), click(200_000, 3), click(201_000, 4)]
    got, _ = run(events)
    assert [(t["action"], t["done"]) for t in got] == [(1, False), (2, True), (3, False), (4, True)]
    # history survives the session boundary; 199-200 s old is bucket 3 (1 .. 5 min)
    assert got[2]["state"]["items"] == [1, 2]
    assert got[2]["state"]["ages"] == [3, 3]


def test_history_is_capped_at_l() -> None:
    rules = Rules(history_length=3, reorder_window_ms=0)
    got, _ = run([click(i * 1000, i) for i in range(6)], rules)
    assert got[5]["state"]["items"] == [2, 3, 4]
    assert got[5]["next_state"]["items"] == [3, 4, 5]


def test_duplicates_are_counted_and_skipped() -> None:
    got, counts = run([click(0, 1), click(0, 1), click(1_000, 2)])
    assert counts.duplicates == 1
    assert [t["action"] for t in got] == [1, 2]


def test_late_event_is_counted_and_applied_now() -> None:
    # e@5000 arrives 5 s after e@0 and 4 s after e@1000 and releases both (window 2 s);
    # e@500 then arrives behind e@1000.
    events = [click(0, 1), click(1_000, 2), click(5_000, 3), click(500, 4), click(6_000, 5)]
    got, counts = run(events, arrivals=[T0 + t for t in (0, 1_000, 5_000, 5_100, 6_000)])
    assert counts.late == 1
    assert [t["action"] for t in got] == [1, 2, 4, 3, 5]
    assert got[2]["ts_ms"] == T0 + 1_000  # applied as of the last released time
    # ...and it takes its event-time place in the history, as in every state builder
    assert got[2]["state"]["items"] == [1, 2]  # e@5000 still waits in the window
    assert got[2]["next_state"]["items"] == [1, 4, 2]
    assert got[3]["state"]["items"] == [1, 4, 2]
    assert len(got) == 5  # nothing silently dropped


def test_cart_removal_is_a_negative_interaction() -> None:
    # docs/streams.md: a removal enters the state with code 4 and earns RECQ_REWARD_CART_REMOVE
    # (-0.5 by default: it takes back what the add earned).
    remove = [Interaction(T0 + 2_000, "e2000", 0, 7, 4)]
    got, _ = run([click(0, 7), cart(1_000, 7), remove, click(3_000, 8)])
    assert [(t["action"], t["reward"]) for t in got] == [(7, 0.2), (7, 0.5), (7, -0.5), (8, 0.2)]
    assert got[3]["state"]["events"] == [1, 2, 4]


# --- properties -------------------------------------------------------------------------
journeys = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=90_000),  # gap to previous event (ms)
        st.sampled_from(["click", "cart", "remove", "purchase"]),
        st.integers(min_value=0, max_value=50),  # item
        st.integers(min_value=0, max_value=1_999),  # arrival jitter < reorder window
    ),
    min_size=1,
    max_size=25,
)


def build(journey: list[tuple[int, str, int, int]]) -> tuple[list[list[Interaction]], list[int]]:
    events, arrival, ts = [], [], 0
    for gap, kind, item, jitter in journey:
        ts += gap
        if kind == "purchase":
            events.append(purchase(ts, item, item + 1))
        elif kind == "cart":
            events.append(cart(ts, item))
        elif kind == "remove":
            events.append([Interaction(T0 + ts, f"e{ts}", 0, item, EVENT_CODES["cart_remove"])])
        else:
            events.append(click(ts, item))
        arrival.append(T0 + ts + jitter)
    return events, arrival


@settings(max_examples=200, deadline=None)
@given(journeys)
def test_any_interleaving_inside_the_window_gives_the_same_transitions(
    journey: list[tuple[int, str, int, int]],
) -> None:
    events, arrival = build(journey)
    order = sorted(range(len(events)), key=lambda i: (arrival[i], i))
    in_order, _ = run(events)
    reordered, counts = run([events[i] for i in order], arrivals=[arrival[i] for i in order])
    assert counts.late == 0
    assert reordered == in_order


@settings(max_examples=200, deadline=None)
@given(journeys)
def test_rewards_and_done_follow_the_rules(journey: list[tuple[int, str, int, int]]) -> None:
    events, _ = build(journey)
    got, _ = run(events)
    interactions = [x for event in events for x in event]
    assert len(got) == len(interactions)  # one organic transition per interaction
    assert [t["seq"] for t in got] == list(range(len(got)))
    rewards = {1: 0.2, 2: 0.5, 3: 1.0, 4: -0.5}  # the documented defaults
    for t, x in zip(got, interactions, strict=True):
        assert t["action"] == x.item
        assert t["reward"] == rewards[x.code]
        ends_checkout = x.code == 3 and x.last_line
        nxt = interactions[interactions.index(x) + 1] if x is not interactions[-1] else None
        gap_ends = nxt is None or nxt.ts_ms - x.ts_ms > RULES.session_timeout_ms
        assert t["done"] == (ends_checkout or gap_ends)
        assert t["next_state"]["items"][-1] == x.item
        Transition.model_validate(t, strict=False)


def test_a_restart_gives_buffered_events_a_fresh_window() -> None:
    # e@1000 was buffered, then the worker died; after the restart the replayed e@500
    # (uncommitted before the crash) must still be put before it.
    sessionizer = Sessionizer(RULES)
    session = UserSession()
    sessionizer.on_event(session, "u1", click(1_000, 1), wall_ms=T0)
    restart = T0 + 60_000
    assert not sessionizer.ready(session, restart + 100, resumed_ms=restart)
    out = sessionizer.on_event(
        session, "u1", click(500, 2), wall_ms=restart + 100, resumed_ms=restart
    )
    assert out.late == 0 and out.transitions == []
    out = sessionizer.on_tick(session, "u1", wall_ms=restart + 2_200, resumed_ms=restart)
    assert [t["action"] for t in out.transitions] == [2]  # e@1000 still pending `done`
    assert session.pending is not None and session.pending["action"] == 1


def test_inputs_read_to_an_end_seen_before_an_event_arrived_do_not_release_it() -> None:
    """Issue 14's lost carts. Every input of the group was read to the end the consumer
    had seen at `seen`; a purchase arrives after that moment, its cart (on another topic,
    produced before it) not fetched yet. The purchase must wait for a newer observation,
    and leave after the cart: cart then purchase, the cart's transition not lost."""
    sessionizer = Sessionizer(RULES)
    session = UserSession()
    seen = T0 + 1_000
    stale = Sync(CAUGHT_UP, observed_ms=seen)  # caught up, as seen at `seen`
    for event, wall in ((click(0, 1), T0), (click(500, 2), T0 + 500)):
        sessionizer.on_event(session, "u1", event, wall_ms=wall, synced=stale)
    buy = [replace(x, arrival_ms=T0 + 1_200) for x in purchase(3_000, 2)]
    out = sessionizer.on_event(session, "u1", buy, wall_ms=T0 + 1_200, synced=stale)
    # Three reorder windows later, under the same (stale) observation: the clicks, which
    # arrived before it, are released; the purchase, which arrived after it, is not.
    out = sessionizer.on_tick(session, "u1", wall_ms=T0 + 8_000, synced=stale)
    assert [t["action"] for t in out.transitions] == [1]  # click 2 pending, purchase held
    assert [x.code for x in session.buffer] == [EVENT_CODES["purchase"]]
    assert not sessionizer.ready(session, T0 + 8_000, synced=stale)
    # The cart arrives late in wall time but before the purchase in event time; a newer
    # observation covers both, and they leave in event-time order.
    fresh = Sync(CAUGHT_UP, observed_ms=T0 + 9_000)
    sessionizer.on_event(session, "u1", cart(1_500, 2), wall_ms=T0 + 8_500, synced=fresh)
    out = sessionizer.on_tick(session, "u1", wall_ms=T0 + 11_000, synced=fresh)
    assert [(t["seq"], t["action"], t["done"]) for t in out.transitions] == [
        (1, 2, False),  # click 2, emitted when the cart is applied
        (2, 2, False),  # the cart
        (3, 2, True),  # the purchase: checkout ends the session
    ]
    assert out.late == 0
    assert session.pending is None and not session.open  # the purchase ended it


def test_a_timestamp_sync_still_releases_what_was_produced_before_it() -> None:
    """While a backlog is read (no input at its end), the Kafka-time rule alone applies:
    an interaction produced by the time every input was read past leaves after the
    window; one produced later waits."""
    sessionizer = Sessionizer(RULES)
    session = UserSession()
    early = [replace(x, produced_ms=T0 + 100) for x in click(0, 1)]
    later = [replace(x, produced_ms=T0 + 900) for x in click(500, 2)]
    backlog = Sync(produced_ms=T0 + 500)
    sessionizer.on_event(session, "u1", early, wall_ms=T0, synced=backlog)
    sessionizer.on_event(session, "u1", later, wall_ms=T0, synced=backlog)
    sessionizer.on_tick(session, "u1", wall_ms=T0 + 5_000, synced=backlog)
    assert [x.item for x in session.buffer] == [2]
    assert session.pending is not None and session.pending["action"] == 1
