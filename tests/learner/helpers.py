"""Builders shared by the learner tests."""

from __future__ import annotations

import numpy as np

from learner.replay.storage import Samples
from schemas.records import InteractionSequence, Transition

L = 4


def seq(*items: int) -> InteractionSequence:
    """A state of click interactions on ``items`` (oldest first), all in age bucket 1."""
    return InteractionSequence(items=list(items), events=[1] * len(items), ages=[1] * len(items))


def transition(
    user: str, seq_no: int, action: int, reward: float, *, done: bool = False,
    state: tuple[int, ...] = (), next_state: tuple[int, ...] | None = None,
) -> Transition:  # fmt: skip
    return Transition(
        user_id=user, seq=seq_no, state=seq(*state), action=action, reward=reward,
        next_state=seq(*(next_state if next_state is not None else (*state, action))),
        done=done, ts_ms=1_700_000_000_000 + seq_no,
    )  # fmt: skip


def samples(actions: list[int], rewards: list[float] | None = None) -> Samples:
    n = len(actions)
    zeros = np.zeros((n, L), np.int64)
    return Samples(
        items=zeros, events=zeros.astype(np.uint8), ages=zeros.astype(np.uint8),
        action=np.array(actions, np.int64),
        ret=np.array(rewards if rewards is not None else [0.0] * n, np.float32),
        next_items=zeros, next_events=zeros.astype(np.uint8), next_ages=zeros.astype(np.uint8),
        discount=np.full(n, 0.9, np.float32),
    )  # fmt: skip
