"""The evaluation protocol of RL next-item recommendation papers (SQN/SAC, Xin et al.
2020; SNQN 2022), on any log recq can read, with every filter computed on training data
only (docs/evaluation.md):

- a session is a visitor's interactions in time order (``schemas.features``' order:
  event time, event_id, line item; a repeated event_id counted once); sessions with
  <= 2 interactions are dropped (a property of each session alone, so no leak);
- sessions are split 80/10/10 into train/validation/test at random (seeded), or, as a
  harder and more honest variant, by time: the sessions that start last are the test;
- the item vocabulary is the items with >= 3 interactions in the *training* sessions;
  other items are removed from every session (a test interaction of an item training
  never saw is counted as ``unknown_test_interactions``, not ranked), and sessions left
  with <= 2 interactions are dropped again;
- every interaction of a test session is a target, ranked against all vocabulary items
  given the interactions before it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from recq.evaluation.logs import LoggedInteraction
from schemas.features import EVENT_CODES

MIN_INTERACTIONS = 3  # "drop sessions and items with <= 2 interactions"
SPLITS = ("random", "time")


@dataclass(frozen=True, slots=True)
class Step:
    item: int  # dense index into Split.items
    code: int  # schemas.features.EVENT_CODES
    ts_ms: int


@dataclass(frozen=True)
class Split:
    name: str  # random | time
    items: list[str]  # the training vocabulary: index -> item id
    train: list[list[Step]]
    validation: list[list[Step]]
    test: list[list[Step]]
    #: Test interactions of items the training sessions do not know (removed, not ranked).
    unknown_test_interactions: int = 0
    #: Test interactions before the vocabulary filter.
    raw_test_interactions: int = 0

    @property
    def interactions(self) -> int:
        return sum(len(s) for s in self.train + self.validation + self.test)


def user_histories(log: list[LoggedInteraction]) -> dict[str, list[LoggedInteraction]]:
    """Each visitor's interactions in ``schemas.features``' order (event time, event_id,
    line item), a repeated event (same user and event_id) kept once."""
    by_user: dict[str, list[LoggedInteraction]] = defaultdict(list)
    first_line: dict[tuple[str, str], int] = {}
    for x in log:
        if first_line.setdefault((x.user, x.event_id), x.line) == x.line:
            by_user[x.user].append(x)
    return {user: sorted(xs, key=lambda x: x.order_key) for user, xs in by_user.items()}


def sessions_of(log: list[LoggedInteraction]) -> list[list[LoggedInteraction]]:
    """Visitors' sessions with >= ``MIN_INTERACTIONS`` interactions, by visitor id."""
    return [xs for _, xs in sorted(user_histories(log).items()) if len(xs) >= MIN_INTERACTIONS]


def split(sessions: list[list[LoggedInteraction]], name: str, seed: int = 0) -> Split:
    """Cut ``sessions`` 80/10/10 (``random``: seeded permutation; ``time``: by the first
    interaction), then keep the items training knows (>= 3 training interactions)."""
    if name == "random":
        order = np.random.default_rng(seed).permutation(len(sessions))
        ordered = [sessions[i] for i in order]
    elif name == "time":
        ordered = sorted(sessions, key=lambda xs: (xs[0].ts_ms, xs[0].user))
    else:
        raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
    n = len(ordered)
    a, b = int(n * 0.8), int(n * 0.9)
    train, validation, test = ordered[:a], ordered[a:b], ordered[b:]
    counts = Counter(x.item for xs in train for x in xs)
    items = sorted(item for item, c in counts.items() if c >= MIN_INTERACTIONS)
    index = {item: i for i, item in enumerate(items)}

    def known(part: list[list[LoggedInteraction]]) -> list[list[Step]]:
        kept = ([Step(index[x.item], EVENT_CODES[x.event], x.ts_ms) for x in xs
                 if x.item in index] for xs in part)  # fmt: skip
        return [xs for xs in kept if len(xs) >= MIN_INTERACTIONS]

    return Split(
        name=name, items=items, train=known(train), validation=known(validation),
        test=known(test),
        unknown_test_interactions=sum(x.item not in index for xs in test for x in xs),
        raw_test_interactions=sum(len(xs) for xs in test),
    )  # fmt: skip
