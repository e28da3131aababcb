"""HR@k and NDCG@k of targets ranked against all items, by group, with paired intervals.

A target's rank is the number of other items scored at least as high as it (0 = first):
ties count against the target, so a model that scores every item alike (session-kNN
with no history, a filtered target at -inf) gets no credit from the tie. HR@k = rank <
k and NDCG@k = 1 / log2(rank + 2) for a hit (one relevant item per target, so the ideal
DCG is 1).

Targets are grouped as the protocol reports them (docs/evaluation.md): ``empty`` (no
interaction before it in the session), ``repeat`` (its item is already in the session)
and ``new``; and by kind (click, cart, purchase)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from learner.ope import Interval
from recq.evaluation.models import Histories, bought_or_carted
from recq.evaluation.protocol import Step
from schemas.features import EVENT_NAMES

KS = (5, 10, 20)
GROUPS = ("empty", "repeat", "new")
#: The two figures the summary tables and the paired intervals report.
HEADLINE = ("hr@20", "ndcg@10")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """scores [B, N], targets [B] item indices -> rank of each target [B] (ties against
    the target: every other item scored >= it is ahead)."""
    target_scores = scores.gather(1, targets.unsqueeze(1))
    return (scores >= target_scores).sum(dim=1) - 1


def group_of(history: list[Step], target: Step) -> str:
    if not history:
        return "empty"
    return "repeat" if any(s.item == target.item for s in history) else "new"


@dataclass(frozen=True)
class Targets:
    """Every interaction of every test session with the interactions before it, and
    what the report groups them by."""

    rows: list[tuple[list[Step], Step]]
    session: np.ndarray  # [T] index of the test session
    kind: np.ndarray  # [T] str: click | cart | purchase | cart_remove
    group: np.ndarray  # [T] str: empty | repeat | new
    #: [T] what serving's filters would not show after each target's history.
    filters: tuple[frozenset[int], ...]

    @classmethod
    def of(cls, sessions: list[list[Step]]) -> Targets:
        rows = [(xs[:t], xs[t]) for xs in sessions for t in range(len(xs))]
        return cls(
            rows=rows,
            session=np.array([i for i, xs in enumerate(sessions) for _ in xs], np.int64),
            kind=np.array([EVENT_NAMES[target.code] for _, target in rows], dtype=object),
            group=np.array([group_of(h, target) for h, target in rows], dtype=object),
            filters=tuple(bought_or_carted(h) for h, _ in rows),
        )

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def filtered(self) -> np.ndarray:
        """[T] bool: serving's filters forbid the target (bought, or in the cart: an order
        of what the cart holds is a target no served slate can hit)."""
        return np.array([t.item in f for (_, t), f in zip(self.rows, self.filters, strict=True)],
                        dtype=bool)  # fmt: skip

    def batches(self, size: int) -> list[tuple[Histories, torch.Tensor]]:
        """The models' inputs, ``size`` targets at a time: (histories, target items). Built
        once per split; every model ranks the same batches."""
        out = []
        for start in range(0, len(self), size):
            chunk = self.rows[start : start + size]
            histories = Histories.build([(h, target.ts_ms) for h, target in chunk],
                                        self.filters[start : start + size])  # fmt: skip
            out.append((histories, torch.tensor([t.item for _, t in chunk], dtype=torch.int64)))
        return out

    def shares(self) -> dict[str, float]:
        """The share of targets in each group, and the share serving's filters forbid."""
        n = max(1, len(self))
        out = {g: round(float((self.group == g).sum()) / n, 4) for g in GROUPS}
        return {**out, "filtered_by_serving": round(float(self.filtered.sum()) / n, 4)}


def gains(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per target: 1/0 for ``hr@k``, the discounted gain for ``ndcg@k``."""
    name, k = metric.split("@")
    hit = ranks < int(k)
    if name == "hr":
        return hit.astype(np.float64)
    return np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)


def summary(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """{"targets": n, "hr@5": ..., "ndcg@5": ..., ...} of the given ranks."""
    row: dict[str, float] = {"targets": len(ranks)}
    for k in ks:
        for name in ("hr", "ndcg"):
            value = gains(ranks, f"{name}@{k}").mean() if len(ranks) else float("nan")
            row[f"{name}@{k}"] = round(float(value), 4)
    return row


def breakdown(ranks: np.ndarray, targets: Targets) -> dict[str, dict[str, float]]:
    """``summary`` of all targets, of each kind present and of each group."""
    out = {"all": summary(ranks)}
    for kind in sorted(set(targets.kind.tolist())):
        out[kind] = summary(ranks[targets.kind == kind])
    for group in GROUPS:
        out[group] = summary(ranks[targets.group == group])
    return out


def paired_difference(
    model: np.ndarray, baseline: np.ndarray, targets: Targets, metric: str, *,
    resamples: int = 1000, level: float = 0.95, seed: int = 0,
) -> Interval:  # fmt: skip
    """``metric`` of ``model`` minus that of ``baseline`` (ranks of the same targets), with
    a percentile interval from resampling test sessions (the unit the targets of one
    shopper share): the Poisson bootstrap, each session drawn Poisson(1) times, the same
    draws for both models."""
    n_sessions = int(targets.session.max()) + 1 if len(targets) else 0
    diff = np.bincount(targets.session, gains(model, metric) - gains(baseline, metric),
                       minlength=n_sessions)  # fmt: skip
    count = np.bincount(targets.session, minlength=n_sessions).astype(np.float64)
    draws = np.random.default_rng(seed).poisson(1.0, (resamples, n_sessions)).astype(np.float64)
    values = (draws @ diff) / np.maximum(draws @ count, 1.0)
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Interval(float(diff.sum() / max(count.sum(), 1.0)), float(low), float(high))
