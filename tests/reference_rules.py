"""recq's transition rules written again, from the README alone, as the reference the
streams tests compare the worker with. Deliberately independent of streams/ and
schemas.features: if the worker and this file disagree, one of them is wrong about the
documented rules.

Scope: a log in which every event of a shopper reaches the worker within the reorder
window, after which every session idles out (what the streams tests produce). Under
that condition the README's rules read:

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
