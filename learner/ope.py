"""Off-policy value estimates of a ranking policy from logged slates (numpy only).

A logged slate i has, per slot j: whether it was shown, the logging policy's propensity
mu_ij of the item it showed there (``SlateTransition.propensities``: the probability of
that item in that slot given the slots before it, as serving logs it), the reward r_ij
(0 for a slot nothing answered), and the target policy's probability pi_ij of putting the
same item in the same slot. The estimators:

* ``slate_snips``: self-normalised IPS on whole slates, w_i = min(c, prod_j pi_ij /
  mu_ij). Unbiased without assumptions on the reward (before normalising and clipping),
  but a deterministic target matches a logged slate of k items rarely: high variance.
* ``slot_ips`` / ``slot_snips``: per-slot IPS under the position-based assumption (a
  slot's reward depends on its item and position, not on the other slots):
  V = sum_j mean_i min(c, pi_ij / mu_ij) r_ij. Unbiased under that assumption when
  mu_ij is the marginal probability of the item in slot j; the logged conditional
  propensity equals it for the first slot, for deterministic logging, and for uniform
  logging up to a factor (N - j) / N.
* ``slot_dr``: doubly robust per slot, with a reward model q_hat: V = sum_j mean_i
  [q_hat(s_i, target item at j) + w_ij (r_ij - q_hat(s_i, logged item at j))].
  Unbiased if either the weights or q_hat are right; lower variance when q_hat is good.

* ``cascade_ips`` / ``cascade_snips``: the reward-interaction estimator (RIPS of
  McInerney et al., KDD 2020; the IPS part of Cascade-DR, Kiyohara et al., WSDM 2022)
  under the cascade assumption (a slot's reward depends on the context and the items in
  it and above it): W_ij = min(c, prod_{l<=j} pi_il / mu_il) with the *conditional*
  propensities serving logs (pi_il is the target's probability of the logged item at
  slot l given the logged slots above it), V = sum_j mean_i W_ij r_ij; the SNIPS form
  divides slot j's sum by sum_i W_ij. Unbiased (before clipping and normalising) for
  any click model in which nothing below slot j changes slot j's outcome: the cascade,
  and the position-based model as a special case. Variance grows with the depth of the
  prefix that must match, which is what the self-normalisation tames.
* ``cascade_dr``: its doubly robust form with a reward model (Kiyohara et al., eq. 6):
  V = sum_j mean_i [W_ij (r_ij - q_logged_ij) + W_i(j-1) q_target_ij], where q_target_ij
  is q_hat's value of slot j under the target given the logged slots above it.

``bootstrap`` gives a percentile confidence interval of any of them by resampling slates;
``paired_bootstrap`` one of the difference of two targets' values on the same slates.
The gate (``learner.gate``) uses ``cascade_snips``: chosen by bias and RMSE against the
simulator's truth (``bench/ope_truth.py``, docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Estimator = Callable[["LoggedSlates"], float]


@dataclass(frozen=True)
class LoggedSlates:
    """n logged slates of up to k slots, as [n, k] arrays (unshown slots masked out)."""

    shown: np.ndarray  # bool
    logging: np.ndarray  # mu_ij, > 0 where shown
    target: np.ndarray  # pi_ij
    reward: np.ndarray  # r_ij
    q_logged: np.ndarray | None = None  # q_hat(s_i, logged item at j)
    q_target: np.ndarray | None = None  # q_hat(s_i, target item at j), expected over pi
    clip: float = 100.0

    def __len__(self) -> int:
        return int(self.shown.shape[0])

    def take(self, rows: np.ndarray) -> LoggedSlates:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return LoggedSlates(self.shown[rows], self.logging[rows], self.target[rows],
                            self.reward[rows], pick(self.q_logged), pick(self.q_target),
                            self.clip)  # fmt: skip

    def slot_weights(self) -> np.ndarray:
        ratio = np.divide(self.target, self.logging, out=np.zeros_like(self.target, dtype=float),
                          where=self.shown & (self.logging > 0))  # fmt: skip
        clipped: np.ndarray = np.minimum(ratio, self.clip)
        return clipped

    def prefix_weights(self, clip: bool = True) -> np.ndarray:
        """W_ij = min(c, prod_{l<=j} pi_il / mu_il), unshown slots counting as ratio 1
        (they were not drawn; with implicit impressions every slot is shown)."""
        ratio = np.divide(self.target, self.logging, out=np.zeros_like(self.target, dtype=float),
                          where=self.logging > 0)  # fmt: skip
        ratio = np.where(self.shown, ratio, 1.0)
        weights: np.ndarray = np.cumprod(ratio, axis=1)
        return np.minimum(weights, self.clip) if clip else weights

    def coverage(self) -> np.ndarray:
        """Per slot, mean_i of the unclipped prefix weight: an unbiased estimate of the
        share of the target's slates (down to that slot) the logging policy could have
        shown. About 1 with full support; the share that is missing is invisible to every
        self-normalised estimate, which silently re-weights what the logs do cover."""
        out: np.ndarray = (self.prefix_weights(clip=False) * self.shown).mean(0)
        return out


def slot_ips(data: LoggedSlates) -> float:
    return float((data.slot_weights() * data.reward * data.shown).sum(1).mean())


def slot_snips(data: LoggedSlates) -> float:
    w = data.slot_weights() * data.shown
    per_slot = np.divide((w * data.reward).sum(0), w.sum(0), out=np.zeros(w.shape[1]),
                         where=w.sum(0) > 0)  # fmt: skip
    return float(per_slot.sum())


def slate_snips(data: LoggedSlates) -> float:
    ratio = np.where(data.shown, np.divide(data.target, data.logging, out=np.zeros_like(
        data.target, dtype=float), where=data.logging > 0), 1.0)  # fmt: skip
    w = np.minimum(ratio.prod(1), data.clip)
    total = w.sum()
    return float((w * (data.reward * data.shown).sum(1)).sum() / total) if total > 0 else 0.0


def slot_dr(data: LoggedSlates) -> float:
    if data.q_logged is None or data.q_target is None:
        raise ValueError("slot_dr needs q_logged and q_target (a reward model's predictions)")
    w = data.slot_weights()
    terms = data.q_target + w * (data.reward - data.q_logged)
    return float((terms * data.shown).sum(1).mean())


def cascade_ips(data: LoggedSlates) -> float:
    return float((data.prefix_weights() * data.reward * data.shown).sum(1).mean())


def cascade_snips_terms(data: LoggedSlates) -> tuple[np.ndarray, np.ndarray]:
    """Per slate and slot, the numerator W_ij r_ij and denominator W_ij of cascade SNIPS
    (its value is sum_j sum_i num_ij / sum_i den_ij): what a bootstrap resamples."""
    w = data.prefix_weights() * data.shown
    return w * data.reward, w


def effective_sizes(weights: np.ndarray) -> np.ndarray:
    """Kish's effective sample size per slot, (sum_i w_ij)^2 / sum_i w_ij^2: how many
    logged slates a weighted slot estimate is really worth."""
    total, squares = weights.sum(0), (weights**2).sum(0)
    out: np.ndarray = np.divide(total**2, squares, out=np.zeros_like(total), where=squares > 0)
    return out


def cascade_snips(data: LoggedSlates) -> float:
    return snips_value(*cascade_snips_terms(data))


def snips_value(num: np.ndarray, den: np.ndarray) -> float:
    total = den.sum(0)
    per_slot = np.divide(num.sum(0), total, out=np.zeros(num.shape[1]), where=total > 0)
    return float(per_slot.sum())


def cascade_dr(data: LoggedSlates) -> float:
    if data.q_logged is None or data.q_target is None:
        raise ValueError("cascade_dr needs q_logged and q_target (a reward model's predictions)")
    w = data.prefix_weights()
    above = np.concatenate([np.ones_like(w[:, :1]), w[:, :-1]], axis=1)
    terms = w * (data.reward - data.q_logged) + above * data.q_target
    return float((terms * data.shown).sum(1).mean())


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def bootstrap(
    estimator: Estimator, data: LoggedSlates, *, resamples: int = 500, level: float = 0.95,
    seed: int = 0,
) -> Interval:  # fmt: skip
    """The estimate and a percentile interval from ``resamples`` bootstrap resamples."""
    rng = np.random.default_rng(seed)
    n = len(data)
    values = np.array([estimator(data.take(rng.integers(n, size=n))) for _ in range(resamples)])
    tail = (1 - level) / 2
    return Interval(estimator(data), float(np.quantile(values, tail)),
                    float(np.quantile(values, 1 - tail)))  # fmt: skip


def paired_bootstrap(
    estimator: Estimator, candidate: LoggedSlates, current: LoggedSlates, *,
    resamples: int = 500, level: float = 0.95, seed: int = 0,
) -> Interval:  # fmt: skip
    """The value of ``candidate`` minus that of ``current`` estimated on the same logged
    slates (the two differ only in ``target``), with a percentile interval from
    resampling slates jointly: what the shared log contributes to both cancels."""
    if len(candidate) != len(current):
        raise ValueError("paired_bootstrap needs the same logged slates for both targets")
    rng = np.random.default_rng(seed)
    n = len(candidate)
    values = np.empty(resamples)
    for b in range(resamples):
        rows = rng.integers(n, size=n)
        values[b] = estimator(candidate.take(rows)) - estimator(current.take(rows))
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Interval(estimator(candidate) - estimator(current), float(low), float(high))


def paired_snips_bootstrap(
    candidate: tuple[np.ndarray, np.ndarray], current: tuple[np.ndarray, np.ndarray], *,
    resamples: int = 500, level: float = 0.95, seed: int = 0,
) -> Interval:  # fmt: skip
    """``paired_bootstrap`` of a self-normalised estimator given its per-slate terms
    (``cascade_snips_terms``), all resamples at once: the Poisson bootstrap (each slate
    drawn Poisson(1) times, independently; Hanley & MacGibbon 2006), so a resample is a
    matrix product instead of a copy of the log. The same draws for both targets."""
    counts = np.random.default_rng(seed).poisson(1.0, (resamples, candidate[0].shape[0]))
    counts = counts.astype(np.float64)

    def values(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        n, d = counts @ num, counts @ den  # [resamples, slots]
        out: np.ndarray = np.divide(n, d, out=np.zeros_like(n), where=d > 0).sum(1)
        return out

    diffs = values(*candidate) - values(*current)
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return Interval(snips_value(*candidate) - snips_value(*current), float(low), float(high))
