"""Turns the transitions topic into n-step samples.

Organic transitions of a user arrive in ``seq`` order (one partition per user). The
writer keeps each user's last n-1 of them and, when the n-th arrives, emits the oldest as
an n-step sample: return sum_j gamma^j r_j, bootstrapped from the n-th next state with
discount gamma^n. When a transition is ``done`` every pending one is emitted with the
return truncated at the end of the episode (discount 0). A gap in ``seq`` (a restart that
refilled from the middle of a session) or the eviction of a long-idle user emits the
pending ones as shorter k-step samples bootstrapped from the last next state, which is
still an unbiased k-step target. (Slate transitions go to their own store:
``learner.replay.slates``.)
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from learner.replay.storage import Samples
from schemas.records import InteractionSequence, Transition


@dataclass(slots=True)
class _Step:
    state: InteractionSequence
    action: int
    reward: float
    next_state: InteractionSequence
    done: bool


class NStepWriter:
    def __init__(
        self, n: int, gamma: float, history_length: int, max_pending_users: int = 100_000
    ) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self.gamma = gamma
        self.history_length = history_length
        self.max_pending_users = max_pending_users
        self._pending: OrderedDict[str, tuple[int, deque[_Step]]] = OrderedDict()
        self._out: list[tuple[_Step, float, InteractionSequence, float]] = []

    @property
    def pending_users(self) -> int:
        return len(self._pending)

    def add(self, transition: Transition) -> None:
        t = transition
        step = _Step(t.state, t.action, t.reward, t.next_state, t.done)
        last_seq, steps = self._pending.pop(t.user_id, (t.seq - 1, deque()))
        if steps and t.seq != last_seq + 1:
            self._emit_all(steps, terminal=False)
        steps.append(step)
        if t.done:
            self._emit_all(steps, terminal=True)
            return
        if len(steps) == self.n:
            self._emit_first(steps, len(steps), terminal=False)
            steps.popleft()
        self._pending[t.user_id] = (t.seq, steps)
        if len(self._pending) > self.max_pending_users:
            _, (_, oldest) = self._pending.popitem(last=False)
            self._emit_all(oldest, terminal=False)

    def flush(self) -> None:
        """Emit every pending step as a shorter bootstrapped sample (shutdown, tests)."""
        for _, steps in self._pending.values():
            self._emit_all(steps, terminal=False)
        self._pending.clear()

    def drain(self) -> Samples:
        """The samples emitted since the last drain, as arrays."""
        out, self._out = self._out, []
        return self._to_arrays(out)

    # --- internals ----------------------------------------------------------------------
    def _emit_first(self, steps: deque[_Step], k: int, terminal: bool) -> None:
        ret = 0.0
        for j in range(k):
            ret += self.gamma**j * steps[j].reward
        last = steps[k - 1]
        discount = 0.0 if terminal else self.gamma**k
        self._out.append((steps[0], ret, last.next_state, discount))

    def _emit_all(self, steps: deque[_Step], terminal: bool) -> None:
        while steps:
            self._emit_first(steps, len(steps), terminal)
            steps.popleft()

    def _to_arrays(self, out: list[tuple[_Step, float, InteractionSequence, float]]) -> Samples:
        n, length = len(out), self.history_length
        shape = (n, length)
        s = Samples(
            items=np.zeros(shape, np.int64),
            events=np.zeros(shape, np.uint8),
            ages=np.zeros(shape, np.uint8),
            action=np.empty(n, np.int64),
            ret=np.empty(n, np.float32),
            next_items=np.zeros(shape, np.int64),
            next_events=np.zeros(shape, np.uint8),
            next_ages=np.zeros(shape, np.uint8),
            discount=np.empty(n, np.float32),
        )
        for i, (step, ret, next_state, discount) in enumerate(out):
            _left_pad(s.items[i], s.events[i], s.ages[i], step.state)
            _left_pad(s.next_items[i], s.next_events[i], s.next_ages[i], next_state)
            s.action[i] = step.action
            s.ret[i] = ret
            s.discount[i] = discount
        return s


def _left_pad(
    items: np.ndarray, events: np.ndarray, ages: np.ndarray, seq: InteractionSequence
) -> None:
    """Newest interaction last; rows are pre-zeroed (event code 0 = padding)."""
    length = items.shape[0]
    k = min(length, len(seq.items))
    if k:
        items[length - k :] = seq.items[-k:]
        events[length - k :] = seq.events[-k:]
        ages[length - k :] = np.minimum(seq.ages[-k:], 255)
