"""The recommenders ``recq evaluate`` compares, each fitted on the training sessions and
asked to score every item given a target's history:

- ``popularity``: interactions per item in training;
- ``cooccurrence``: item-to-item, how often items appear within ``WINDOW`` steps of each
  other in a training session, summed over the last three items of the history (newest
  weighted most), popularity breaking ties and covering items never seen together;
- ``supervised``: the learner's sequence encoder trained only for the next item (full
  softmax cross-entropy): a GRU4Rec-style supervised model on the same architecture;
- ``dqn``: the learner's Q-network (n-step double DQN with negative actions) with organic
  reward counted in full, ranking by Q (``RECQ_RANKING=q``, ``RECQ_ORGANIC_REWARD=1``:
  what recq served before issue 22);
- ``dqn+sqn``: the same with the supervised next-item head (SQN), ranking by that head
  (``RECQ_RANKING=next_item``), as in the SQN paper;
- ``served``: what a snapshot trained on this log with the environment's ``RECQ_*``
  learner settings ranks (by default the response ranking), serving's filters applied.
  The response ranking learns what showing an item earns from logged slates, which a
  click log does not have: here it has only its organic prior (docs/evaluation.md).

States are built by the rules every stage uses (schemas.features.encode_state).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from inference.state import Shopper
from learner.export import ranking_scores
from learner.qnet import QNetwork
from learner.replay.buffer import ReplayBuffer
from recq.evaluation.protocol import Step
from schemas.features import DEFAULT_HISTORY_LENGTH, EVENT_CODES, encode_state
from schemas.records import InteractionSequence, Transition
from schemas.reward import Reward
from schemas.settings import LearnerSettings, ServingSettings, load_settings

HISTORY = DEFAULT_HISTORY_LENGTH
#: The rows that learn (the others are the baselines intervals are taken against).
LEARNED = ("supervised", "dqn", "dqn+sqn", "served")
WINDOW = 3
Progress = Callable[[int], None]  # advance a progress bar by n


@dataclass(frozen=True)
class Histories:
    """Left-padded histories of a batch of targets (events 0 = padding), and what
    serving's filters would exclude for each (from the whole session so far, as serving
    remembers purchases and the cart beyond the last ``HISTORY`` interactions)."""

    items: torch.Tensor  # [B, HISTORY] int64
    events: torch.Tensor
    ages: torch.Tensor
    bought_or_carted: tuple[frozenset[int], ...] = ()
    seen: tuple[frozenset[int], ...] = ()

    @classmethod
    def build(
        cls, rows: list[tuple[list[Step], int]],
        filters: Sequence[frozenset[int]] | None = None,
    ) -> Histories:  # fmt: skip
        """rows: (history, decision time in ms); ``filters``: each row's
        ``bought_or_carted`` where the caller has it already (else computed here)."""
        items = torch.zeros(len(rows), HISTORY, dtype=torch.int64)
        events, ages = torch.zeros_like(items), torch.zeros_like(items)
        filtered: list[frozenset[int]] = []
        seen: list[frozenset[int]] = []
        for r, (history, now) in enumerate(rows):
            state = _state(history, now)
            n = len(state.items)
            if n:
                items[r, HISTORY - n :] = torch.tensor(state.items)
                events[r, HISTORY - n :] = torch.tensor(state.events)
                ages[r, HISTORY - n :] = torch.tensor(state.ages)
            seen.append(frozenset(state.items))
            if filters is None:
                filtered.append(bought_or_carted(history))
        if filters is not None:
            filtered = list(filters)
        return cls(items, events, ages, tuple(filtered), tuple(seen))

    def excluded(self, exclude_seen: bool) -> list[frozenset[int]]:
        """Per row, the items serving would not show (``RECQ_SERVE_EXCLUDE_SEEN``: also
        the last ``HISTORY`` interactions)."""
        if not exclude_seen:
            return list(self.bought_or_carted)
        return [a | b for a, b in zip(self.bought_or_carted, self.seen, strict=True)]


def bought_or_carted(history: list[Step]) -> frozenset[int]:
    """The items serving would not show after ``history``: bought, or in the cart, by the
    rule serving keeps (``inference.state.Shopper.note``)."""
    shopper = Shopper()
    for t, step in enumerate(history):
        if step.code != EVENT_CODES["click"]:
            shopper.note(str(step.item), step.code, (step.ts_ms, f"{t:09d}"))
    return frozenset(int(i) for i in shopper.purchased | shopper.cart)


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


class CountingModel:
    """A recommender fitted by one counting pass over the training sessions (``count``):
    one progress step."""

    def fit(self, sessions: list[list[Step]], n_items: int, progress: Progress) -> None:
        self.count(sessions, n_items)
        progress(1)

    def fit_steps(self) -> int:
        return 1

    def count(self, sessions: list[list[Step]], n_items: int) -> None:
        raise NotImplementedError


class Popularity(CountingModel):
    name = "popularity"

    def count(self, sessions: list[list[Step]], n_items: int) -> None:
        self.counts = torch.tensor(item_counts(sessions, n_items), dtype=torch.float32)

    def score(self, batch: Histories) -> torch.Tensor:
        return self.counts.expand(batch.items.shape[0], -1)


class CoOccurrence(CountingModel):
    name = "cooccurrence"
    recency = (1.0, 0.5, 0.25)  # weights of the newest, second and third newest item

    def count(self, sessions: list[list[Step]], n_items: int) -> None:
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


class Supervised:
    """The learner's sequence encoder trained only for the next item (full softmax)."""

    name = "supervised"

    def __init__(self, *, updates: int, batch_size: int = 256, seed: int = 0) -> None:
        self.updates, self.batch_size, self.seed = updates, batch_size, seed

    def fit_steps(self) -> int:
        return self.updates

    def fit(self, sessions: list[list[Step]], n_items: int, progress: Progress) -> None:
        torch.manual_seed(self.seed)
        self.net = QNetwork(n_items=n_items, history_length=HISTORY, supervised_head=True)
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
        self.net.eval()

    @torch.no_grad()
    def score(self, batch: Histories) -> torch.Tensor:
        hidden, _, _ = self.net.encode(batch.items, batch.events, batch.ages)
        return self.net.supervised_logits(hidden, None)


class Snapshot:
    """What a snapshot of the learner trained on this log would rank: the network the
    learner builds from ``settings`` (``learner.service.build_dqn``), trained by the
    learner's update on the training sessions' transitions as the streams worker emits
    them (organic only: a click log has no slates), ranked by
    ``learner.export.ranking_scores`` (the reference each snapshot's ONNX graph is held
    to) with ``settings.ranking``. With ``serving_filters``, the items serving would
    never show are ranked last: bought or in the cart by the rule serving keeps
    (``inference.state.Shopper.note``), and with ``exclude_seen`` the history."""

    def __init__(self, name: str, settings: LearnerSettings, *, updates: int, seed: int = 0,
                 serving_filters: bool = False, exclude_seen: bool = False) -> None:  # fmt: skip
        if settings.history_length > HISTORY:
            raise ValueError(
                f"RECQ_HISTORY_LENGTH={settings.history_length}: recq evaluate builds "
                f"histories of {HISTORY} interactions; evaluate with {HISTORY} or fewer"
            )
        self.name, self.settings, self.updates, self.seed = name, settings, updates, seed
        self.serving_filters, self.exclude_seen = serving_filters, exclude_seen

    def fit_steps(self) -> int:
        return self.updates

    def fit(self, sessions: list[list[Step]], n_items: int, progress: Progress) -> None:
        from learner.service import build_dqn

        torch.manual_seed(self.seed)
        cfg = self.settings
        self.dqn = build_dqn(cfg, torch.device("cpu"), n_items)
        data = transitions(sessions)
        replay = ReplayBuffer.build(
            capacity=max(1, len(data)), history_length=cfg.history_length,
            device=torch.device("cpu"), prioritized=True, n_step=cfg.n_step, gamma=cfg.gamma,
        )  # fmt: skip
        replay.add(data)
        for step in range(self.updates):
            batch = replay.sample(cfg.batch_size, 0.4 + 0.6 * step / self.updates)
            replay.update_priorities(batch, self.dqn.update(batch).td_error)
            progress(1)
        self.dqn.online.eval()

    @torch.no_grad()
    def score(self, batch: Histories) -> torch.Tensor:
        length = self.settings.history_length
        scores = ranking_scores(self.dqn.online, self.settings.ranking, batch.items[:, -length:],
                                batch.events[:, -length:], batch.ages[:, -length:])  # fmt: skip
        if self.serving_filters:
            for row, excluded in enumerate(batch.excluded(self.exclude_seen)):
                if excluded:
                    scores[row, list(excluded)] = -math.inf
        return scores


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


def recommenders(
    updates: int,
    seed: int = 0,
    served: ServingSettings | None = None,
    learner: LearnerSettings | None = None,
) -> list[Recommender]:
    """Popularity, co-occurrence, the supervised model, the Q ranking recq served before
    issue 22 (``dqn``: organic reward in full), the SQN head (``dqn+sqn``), and what a
    snapshot trained with ``learner``'s settings serves (``served``, with ``served``'s
    filters; by default the environment's ``RECQ_*`` settings)."""
    learner = learner if learner is not None else load_settings(LearnerSettings)
    served = served if served is not None else load_settings(ServingSettings)
    organic = {"organic_reward": 1.0, "supervised_negatives": 256, "item_features": False,
               "batch_size": 256}  # fmt: skip
    return [
        Popularity(),
        CoOccurrence(),
        Supervised(updates=updates, seed=seed),
        Snapshot("dqn", LearnerSettings(**organic, ranking="q", supervised_head=False),  # type: ignore[arg-type]
                 updates=updates, seed=seed),
        Snapshot("dqn+sqn", LearnerSettings(**organic, ranking="next_item",  # type: ignore[arg-type]
                                            supervised_head=True),
                 updates=updates, seed=seed),
        Snapshot("served", learner, updates=updates, seed=seed, serving_filters=True,
                 exclude_seen=served.serve_exclude_seen),
    ]  # fmt: skip
