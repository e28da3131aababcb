"""recq's transition rules written again, from the documented rules alone
(docs/streams.md), as the reference the streams tests compare the worker with.
Deliberately independent of streams/ and schemas.features: if the worker and this file
disagree, one of them is wrong about the documented rules.

Scope: a log in which every event of a shopper reaches the worker within the reorder
window, after which every session idles out (what the streams tests produce). Under
that condition the documented rules read:

* a shopper's events are taken once per event_id, in (event time, event_id) order;
* a click is one interaction (code 1), a cart add one (code 2), a cart removal one
  (code 4), a purchase one per line item in line order (code 3);
* each interaction is one organic transition: ``seq`` counts the shopper's
  interactions from 0; ``state`` is the last L interactions before it, ``next_state``
  the last L including it, both with age buckets relative to its event time (1 for
  < 10 s, 2 < 1 min, 3 < 5 min, 4 < 30 min, 5 < 2 h, 6 < 1 d, 7 older); ``reward`` is
  click 0.2, cart 0.5, each purchase line 1.0, removal -0.5 (the defaults);
* ``done`` is true at checkout (the last line of a purchase), when the next interaction
  comes more than the session timeout later, and for the shopper's last interaction
  (the session idles out).

Items stay as ids here: compare after mapping the worker's indices to ids.
"""

from __future__ import annotations

from typing import Any

AGE_LIMITS_MS = (10_000, 60_000, 300_000, 1_800_000, 7_200_000, 86_400_000)
REWARDS = {1: 0.2, 2: 0.5, 3: 1.0, 4: -0.5}


def age_bucket(age_ms: int) -> int:
    for bucket, limit in enumerate(AGE_LIMITS_MS, start=1):
        if age_ms < limit:
            return bucket
    return 7


def interactions(event: Any) -> list[tuple[str, int, bool]]:
    """(item id, code, ends a checkout) for each interaction an event stands for."""
    if event.type == "click":
        return [(event.item_id, 1, False)]
    if event.type == "cart":
        return [(event.item_id, 2 if event.action == "add" else 4, False)]
    lines = event.items
    return [(line.item_id, 3, n == len(lines) - 1) for n, line in enumerate(lines)]


def state(history: list[tuple[str, int, int]], now_ms: int) -> dict[str, list[Any]]:
    return {
        "items": [item for item, _, _ in history],
        "events": [code for _, code, _ in history],
        "ages": [age_bucket(now_ms - ts) for _, _, ts in history],
    }


def reference_transitions(
    log: list[Any], *, history_length: int, session_timeout_ms: int
) -> list[dict[str, Any]]:
    by_user: dict[str, dict[str, Any]] = {}
    for event in log:
        by_user.setdefault(event.user_id, {}).setdefault(event.event_id, event)
    out = []
    for user, events in by_user.items():
        ordered = sorted(events.values(), key=lambda e: (e.ts_ms, e.event_id))
        steps = [(e.ts_ms, *x) for e in ordered for x in interactions(e)]
        history: list[tuple[str, int, int]] = []
        for seq, (ts, item, code, checkout) in enumerate(steps):
            after = [*history, (item, code, ts)][-history_length:]
            last = seq == len(steps) - 1
            gap_ends = not last and steps[seq + 1][0] - ts > session_timeout_ms
            out.append(
                {
                    "user_id": user,
                    "seq": seq,
                    "kind": "organic",
                    "state": state(history, ts),
                    "action": item,
                    "reward": REWARDS[code],
                    "next_state": state(after, ts),
                    "done": checkout or gap_ends or last,
                    "ts_ms": ts,
                }
            )
            history = after
    return out


def reference_slates(
    log: list[Any], *, history_length: int, session_timeout_ms: int
) -> list[dict[str, Any]]:
    """The documented slate transitions (docs/streams.md) for a log of
    events and recommendation records, implicit impressions, under the same condition
    (every message within the reorder window; each recommendation followed by one of its
    shopper's events; the reward wait longer than any session).

    * A recommendation's window opens with the state of the interactions before its
      serving time (ages at the serving time); a repeated rec_id counts once.
    * An event with its rec_id and position, whose item is in that slot, adds its reward
      to the slot; the slot's response is the strongest of click 1, cart 2, purchase 3
      (a removal only adds its reward); next_state is the state just after the first
      response (an interaction with code 1..3).
    * Windows close when the session ends: at checkout (windows served up to the
      purchase), at a gap over the timeout and when the shopper idles out (windows
      served up to last event + timeout). The last window closed by an end is done.
    """
    events: dict[str, dict[str, Any]] = {}
    for record in log:
        key = record.rec_id if record.record_name == "recommendation" else record.event_id
        events.setdefault(record.user_id, {}).setdefault(key, record)
    out: list[dict[str, Any]] = []
    for user, records in events.items():
        timeline = []
        for r in records.values():
            if r.record_name == "recommendation":
                timeline.append(((r.served_ts_ms, "", 0), "rec", r))
            else:
                for line, (item, code, checkout) in enumerate(interactions(r)):
                    timeline.append(((r.ts_ms, r.event_id, line), "x", (r, item, code, checkout)))
        timeline.sort(key=lambda t: t[0])
        history: list[tuple[str, int, int]] = []
        windows: list[dict[str, Any]] = []
        seq = 0
        is_open, last_ts = False, 0

        def close(end_ts: int) -> None:
            nonlocal seq, windows
            ended = [w for w in windows if w["ts_ms"] <= end_ts]
            windows = [w for w in windows if w["ts_ms"] > end_ts]
            for n, w in enumerate(ended):
                out.append({**w, "seq": seq, "done": n == len(ended) - 1})
                seq += 1

        for (ts, _, _), kind, payload in timeline:
            if kind == "rec":
                r = payload
                windows.append({
                    "kind": "slate", "user_id": user, "rec_id": r.rec_id, "policy": r.policy,
                    "model_version": r.model_version,
                    "state": state(history[-history_length:], ts),
                    "items": [i.item_id for i in r.items],
                    "propensities": [i.propensity for i in r.items],
                    "shown": [True] * len(r.items), "responses": [0] * len(r.items),
                    "rewards": [0.0] * len(r.items), "next_state": None,
                    "closed_by": "session_end", "ts_ms": ts,
                })  # fmt: skip
                continue
            event, item, code, checkout = payload
            if is_open and ts - last_ts > session_timeout_ms:
                close(last_ts + session_timeout_ms)
            is_open, last_ts = True, max(last_ts, ts)
            history = [*history, (item, code, ts)][-history_length:]
            rec_id, position = getattr(event, "rec_id", None), getattr(event, "position", None)
            window = next((w for w in windows if w["rec_id"] == rec_id), None)
            if (
                window is not None
                and position < len(window["items"])
                and window["items"][position] == item
                and ts >= window["ts_ms"]
            ):
                window["rewards"][position] += REWARDS[code]
                if code <= 3:
                    window["responses"][position] = max(window["responses"][position], code)
                    if window["next_state"] is None:
                        window["next_state"] = state(history, ts)
            if checkout:
                close(ts)
                is_open = False
        if is_open:
            close(last_ts + session_timeout_ms)
    return out
