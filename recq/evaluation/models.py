"""The recommenders ``recq evaluate`` compares, each fitted on the training sessions and
asked to score every item given a target's history:

- ``popularity``: interactions per item in training;
- ``cooccurrence``: item-to-item, how often items appear within ``WINDOW`` steps of each
  other in a training session, summed over the last three items of the history (newest
  weighted most), popularity breaking ties and covering items never seen together;
- ``supervised``: the learner's sequence encoder trained only for the next item (full
  softmax cross-entropy): a GRU4Rec-style supervised model on the same architecture;
- ``dqn``: the learner's Q-network (n-step double DQN with negative actions) with organic
  reward counted in full, ranking by Q. What recq serves by default (the response
  ranking) learns from logged slates, which a click log does not have: offline on a
  click log it is the ``dqn+sqn`` row's next-item prior and nothing more;
- ``dqn+sqn``: the same with the supervised next-item head (SQN), ranking by that head,
  as in the SQN paper.

States are built by the rules every stage uses (schemas.features.encode_state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from learner.dqn import DQN
from learner.qnet import QNetwork
from learner.replay.buffer import ReplayBuffer
from recq.evaluation.protocol import Step
from schemas.features import DEFAULT_HISTORY_LENGTH, encode_state
from schemas.records import InteractionSequence, Transition
from schemas.reward import Reward
from schemas.settings import LearnerSettings

HISTORY = DEFAULT_HISTORY_LENGTH
WINDOW = 3
Progress = Callable[[int], None]  # advance a progress bar by n


@dataclass(frozen=True)
class Histories:
    """Left-padded histories of a batch of targets (events 0 = padding)."""

    items: torch.Tensor  # [B, HISTORY] int64
    events: torch.Tensor
    ages: torch.Tensor

    @classmethod
    def build(cls, rows: list[tuple[list[Step], int]]) -> Histories:
        """rows: (history, decision time in ms)."""
        items = torch.zeros(len(rows), HISTORY, dtype=torch.int64)
        events, ages = torch.zeros_like(items), torch.zeros_like(items)
        for r, (history, now) in enumerate(rows):
            state = _state(history, now)
            n = len(state.items)
            if n:
                items[r, HISTORY - n :] = torch.tensor(state.items)
                events[r, HISTORY - n :] = torch.tensor(state.events)
                ages[r, HISTORY - n :] = torch.tensor(state.ages)
        return cls(items, events, ages)


def _state(history: list[Step], now_ms: int) -> InteractionSequence:
    state = encode_state([[s.item, s.code, s.ts_ms] for s in history[-HISTORY:]], now_ms)
    return InteractionSequence(items=state["items"], events=state["events"], ages=state["ages"])


def item_counts(sessions: list[list[Step]], n_items: int) -> np.ndarray:
    """Interactions per item in ``sessions``."""
    return np.bincount([s.item for xs in sessions for s in xs], minlength=n_items)


def tie_breaking_popularity(sessions: list[list[Step]], n_items: int) -> torch.Tensor:
    """Interactions per item scaled below 1: added to scores that count co-occurrences or
    session occurrences, it only orders what they leave tied."""
    counts = item_counts(sessions, n_items)
    return torch.tensor(counts / (counts.max() + 1.0), dtype=torch.float32)


class Recommender(Protocol):
    name: str

    def fit(self, sessions: list[list[Step]], n_items: int, progress: Progress) -> None: ...

    def fit_steps(self) -> int: ...

    def score(self, batch: Histories) -> torch.Tensor: ...


class Popularity:
    name = "popularity"

    def fit(self, sessions: list[list[Step]], n_items: int, progress: Progress) -> None:
        self.counts = torch.tensor(item_counts(sessions, n_items), dtype=torch.float32)
        progress(1)

    def fit_steps(self) -> int:
        return 1

    def score(self, batch: Histories) -> torch.Tensor:
        return self.counts.expand(batch.items.shape[0], -1)


class CoOccurrence:
    name = "cooccurrence"
    recency = (1.0, 0.5, 0.25)  # weights of the newest, second and third newest item

    def fit(self, sessions: list[list[Step]], n_items: int, progress: Progress) -> None:
        rows, cols = [], []
        for xs in sessions:
            items = [s.item for s in xs]
            for i, a in enumerate(items):
                for b in items[i + 1 : i + 1 + WINDOW]:
                    if a != b:
                        rows += [a, b]
                        cols += [b, a]
        self.n_items = n_items
        index = torch.tensor([rows, cols], dtype=torch.int64).reshape(2, -1)
        self.pairs = torch.sparse_coo_tensor(
            index, torch.ones(index.shape[1]), (n_items, n_items), check_invariants=True
        ).coalesce()
        self.popularity = tie_breaking_popularity(sessions, n_items)
        progress(1)

    def fit_steps(self) -> int:
        return 1

    def score(self, batch: Histories) -> torch.Tensor:
        scores = self.popularity.expand(batch.items.shape[0], -1).clone()
        for back, weight in enumerate(self.recency, 1):
            real = batch.events[:, -back] > 0
            if not bool(real.any()):
                continue
            rows = torch.nonzero(real).squeeze(1)
            picked = self.pairs.index_select(0, batch.items[rows, -back]).to_dense()
            scores[rows] += weight * picked
        return scores


class LearnerModel:
    """The learner's network, trained here offline on transitions built from the training
    sessions exactly as the streams worker would emit them."""

    def __init__(
        self, name: str, *, objective: str, updates: int, batch_size: int = 256, seed: int = 0
    ) -> None:
        self.name = name
        self.objective = objective  # "supervised" | "dqn" | "dqn+sqn"
        self.updates = updates
        self.batch_size = batch_size
        self.seed = seed

    def fit_steps(self) -> int:
        return self.updates

    def fit(self, sessions: list[list[Step]], n_items: int, progress: Progress) -> None:
        torch.manual_seed(self.seed)
        self.net = QNetwork(
            n_items=n_items, history_length=HISTORY, supervised_head=self.objective != "dqn"
        )
        if self.objective == "supervised":
            self._fit_supervised(sessions, progress)
        else:
            self._fit_dqn(sessions, progress)
        self.net.eval()

    def _fit_supervised(self, sessions: list[list[Step]], progress: Progress) -> None:
        rows = [(xs[:t], xs[t].ts_ms) for xs in sessions for t in range(len(xs))]
        targets = torch.tensor([xs[t].item for xs in sessions for t in range(len(xs))])
        states = Histories.build(rows)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=3e-3, weight_decay=1e-5)
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.updates):
            pick = torch.randint(len(rows), (self.batch_size,), generator=generator)
            hidden, _, _ = self.net.encode(
                states.items[pick], states.events[pick], states.ages[pick]
            )
            loss = F.cross_entropy(self.net.supervised_logits(hidden, None), targets[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            progress(1)

    def _fit_dqn(self, sessions: list[list[Step]], progress: Progress) -> None:
        data = transitions(sessions)
        replay = ReplayBuffer.build(
            capacity=max(1, len(data)), history_length=HISTORY, device=torch.device("cpu"),
            prioritized=True, n_step=3, gamma=0.9,
        )  # fmt: skip
        replay.add(data)
        # Organic reward in full: a click log has no slates, so Q learns from what
        # shoppers did (RECQ_ORGANIC_REWARD=1, the Q ranking recq served before issue 22).
        dqn = DQN(self.net, LearnerSettings(supervised_negatives=256, organic_reward=1.0))
        for step in range(self.updates):
            batch = replay.sample(self.batch_size, 0.4 + 0.6 * step / self.updates)
            replay.update_priorities(batch, dqn.update(batch).td_error)
            progress(1)

    @torch.no_grad()
    def score(self, batch: Histories) -> torch.Tensor:
        hidden, user, _ = self.net.encode(batch.items, batch.events, batch.ages)
        if self.objective == "dqn":
            return self.net.scores(user)  # ranks exactly like Q(s, .)
        return self.net.supervised_logits(hidden, None)


def transitions(sessions: list[list[Step]]) -> list[Transition]:
    """Organic transitions of the training sessions (state before, action, reward by
    event type with recq's default rewards (``schemas.reward``), next state; ``done`` at
    a session's last step)."""
    reward = Reward()
    out = []
    for u, xs in enumerate(sessions):
        for t, step in enumerate(xs):
            out.append(
                Transition(
                    user_id=f"s{u}", seq=t, kind="organic", state=_state(xs[:t], step.ts_ms),
                    action=step.item, reward=reward.of(step.code),
                    next_state=_state(xs[: t + 1], step.ts_ms), done=t == len(xs) - 1,
                    ts_ms=step.ts_ms,
                )
            )  # fmt: skip
    return out


def recommenders(updates: int, seed: int = 0) -> list[Recommender]:
    return [
        Popularity(),
        CoOccurrence(),
        LearnerModel("supervised", objective="supervised", updates=updates, seed=seed),
        LearnerModel("dqn", objective="dqn", updates=updates, seed=seed),
        LearnerModel("dqn+sqn", objective="dqn+sqn", updates=updates, seed=seed),
    ]
