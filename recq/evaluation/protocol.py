"""The evaluation protocol of RL next-item recommendation papers (SQN/SAC, Xin et al.
2020; SNQN 2022), on any log recq can read:

- a session is a visitor's interactions in time order (``schemas.features``' order:
  event time, event_id, line item; a repeated event_id counted once);
- items with <= 2 interactions are dropped, then sessions with <= 2 interactions;
- sessions are split 80/10/10 into train/validation/test at random (seeded), or, as a
  harder and more honest variant, by time: the sessions that start last are the test;
- every interaction of a test session is a target, ranked against all items given the
  interactions before it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from recq.evaluation.logs import LoggedInteraction
from schemas.features import EVENT_CODES

MIN_INTERACTIONS = 3  # "drop sessions and items with <= 2 interactions"


@dataclass(frozen=True, slots=True)
class Step:
    item: int  # dense index into Dataset.items
    code: int  # schemas.features.EVENT_CODES
    ts_ms: int


@dataclass(frozen=True)
class Dataset:
    items: list[str]  # index -> item id
    sessions: list[list[Step]]

    @property
    def interactions(self) -> int:
        return sum(len(s) for s in self.sessions)


@dataclass(frozen=True)
class Split:
    name: str  # random | time
    train: list[list[Step]]
    validation: list[list[Step]]
    test: list[list[Step]]


def user_histories(log: list[LoggedInteraction]) -> dict[str, list[LoggedInteraction]]:
    """Each visitor's interactions in ``schemas.features``' order (event time, event_id,
    line item), a repeated event (same user and event_id) kept once."""
    by_user: dict[str, list[LoggedInteraction]] = defaultdict(list)
    first_line: dict[tuple[str, str], int] = {}
    for x in log:
        if first_line.setdefault((x.user, x.event_id), x.line) == x.line:
            by_user[x.user].append(x)
    return {user: sorted(xs, key=lambda x: x.order_key) for user, xs in by_user.items()}


def build_dataset(log: list[LoggedInteraction]) -> Dataset:
    """Sessions by visitor, filtered as the protocol says (items first, then sessions)."""
    item_counts = Counter(x.item for x in log)
    kept = [x for x in log if item_counts[x.item] >= MIN_INTERACTIONS]
    sessions_raw = [
        xs for _, xs in sorted(user_histories(kept).items()) if len(xs) >= MIN_INTERACTIONS
    ]
    items = sorted({x.item for xs in sessions_raw for x in xs})
    index = {item: i for i, item in enumerate(items)}
    sessions = [
        [Step(index[x.item], EVENT_CODES[x.event], x.ts_ms) for x in xs] for xs in sessions_raw
    ]
    return Dataset(items=items, sessions=sessions)


def split_random(dataset: Dataset, seed: int = 0) -> Split:
    order = np.random.default_rng(seed).permutation(len(dataset.sessions))
    return _cut("random", [dataset.sessions[i] for i in order])


def split_time(dataset: Dataset) -> Split:
    """Train on the sessions that started first, test on those that started last."""
    return _cut("time", sorted(dataset.sessions, key=lambda s: s[0].ts_ms))


def _cut(name: str, sessions: list[list[Step]]) -> Split:
    n = len(sessions)
    a, b = int(n * 0.8), int(n * 0.9)
    return Split(name, sessions[:a], sessions[a:b], sessions[b:])
