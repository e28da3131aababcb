"""The online guard: roll back a served snapshot that earns less than the one before it.

Every closed slate names the snapshot that served it (``model_version``). The guard keeps,
per served snapshot, the impressions (shown slots) and their reward (count, sum, sum of
squares). The snapshot serving now is compared with its reference: the newest earlier
snapshot that has at least ``RECQ_GUARD_MIN_IMPRESSIONS`` impressions and was not rolled
back itself. Once both have that many, after every batch of slates the guard computes
the mixture sequential probability ratio (mSPRT; Johari, Pekelis & Walsh, "Always valid
inference", 2017) of the difference d of their mean reward per impression, with a normal
mixing distribution N(0, tau^2) over the effect and the plug-in variance V of d:

    Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2)))

and fires when d < 0 and Lambda >= 1 / RECQ_GUARD_ALPHA. Under no difference the
probability of ever firing, however long it watches, is at most alpha (Ville's
inequality) for independent impressions; tests/learner/test_guard.py measures it on
this setup (the reference's figures frozen, the served one's growing). tau is a
``TAU_FRACTION`` of the reference's mean: the size of drop the test is most sensitive to.

Firing pins the reference (``ModelStore.pin(by="guard")``): every member swaps back
within a second. The learner lifts a guard's pin (never an operator's) when the gate
promotes a newer snapshot, which it judged against the pinned one.

Caveats, stated rather than hidden: impressions of one shopper are not independent, and
the two snapshots served at different times (a drifting shop moves both means); the
reference is the last snapshot with enough impressions, so with snapshots every few
seconds and little traffic the comparison spans several versions.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Counter

from schemas.model_store import ModelStore
from schemas.records import SlateTransition

log = logging.getLogger("recq.learner")

ROLLBACKS = Counter("recq_learner_guard_rollbacks_total", "Snapshots the online guard rolled back.")
#: The mixing scale tau as a fraction of the reference's reward per impression.
TAU_FRACTION = 0.2
#: Served snapshots whose figures are kept (older ones cannot be references any more).
KEEP_VERSIONS = 64


@dataclass
class Earnings:
    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, reward: float) -> None:
        self.n += 1
        self.total += reward
        self.squares += reward * reward

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        if self.n < 2:
            return 0.0
        return max(0.0, (self.squares - self.n * self.mean**2) / (self.n - 1))


def msprt(served: Earnings, reference: Earnings, tau: float) -> float:
    """The mixture likelihood ratio of 'served differs from reference' (see the module)."""
    v = served.variance / max(served.n, 1) + reference.variance / max(reference.n, 1)
    if v <= 0 or tau <= 0:
        return 1.0
    d = served.mean - reference.mean
    exponent = d * d * tau * tau / (2 * v * (v + tau * tau))
    return math.sqrt(v / (v + tau * tau)) * math.exp(min(exponent, 700.0))


@dataclass(frozen=True)
class Rollback:
    served: int
    reference: int
    served_mean: float
    reference_mean: float
    impressions: tuple[int, int]
    ratio: float

    def describe(self) -> str:
        return (
            f"snapshot {self.served} earns {self.served_mean:.4f} per impression over "
            f"{self.impressions[0]} impressions vs {self.reference_mean:.4f} for snapshot "
            f"{self.reference} over {self.impressions[1]} (mSPRT ratio {self.ratio:.3g})"
        )


class OnlineGuard:
    def __init__(self, store: ModelStore, *, alpha: float, min_impressions: int) -> None:
        self.store = store
        self.alpha, self.min_impressions = alpha, min_impressions
        self.earnings: dict[int, Earnings] = {}
        self.rolled_back: set[int] = set()
        self.fired: list[Rollback] = []
        self._lock = threading.Lock()

    def observe(self, transitions: Iterable[SlateTransition]) -> Rollback | None:
        """Add closed slates; check; on a significant drop pin the reference."""
        with self._lock:
            for t in transitions:
                if not t.model_version.isdigit():
                    continue  # popularity fallback or a baseline: no snapshot to judge
                version = int(t.model_version)
                earned = self.earnings.setdefault(version, Earnings())
                for shown, reward in zip(t.shown, t.rewards, strict=True):
                    if shown:
                        earned.add(reward)
            for old in sorted(self.earnings)[:-KEEP_VERSIONS]:
                del self.earnings[old]
            rollback = self.check()
            if rollback is None:
                return None
            self.rolled_back.add(rollback.served)
            if rollback.reference not in self.store.versions():
                # Pruned (a comparison of old slates, e.g. re-read after a restart): a pin
                # to it could not be served, so say so instead of pinning.
                log.warning("online guard: %s; snapshot %d is no longer in the store, "
                            "nothing pinned", rollback.describe(), rollback.reference)  # fmt: skip
                return None
            self.fired.append(rollback)
            ROLLBACKS.inc()
            self.store.pin(rollback.reference, by="guard", reason=rollback.describe())
            log.warning("online guard: pinned snapshot %d: %s", rollback.reference,
                        rollback.describe())  # fmt: skip
            return rollback

    def check(self) -> Rollback | None:
        if not self.earnings:
            return None
        served = max(self.earnings)
        if served in self.rolled_back:
            return None
        now = self.earnings[served]
        if now.n < self.min_impressions:
            return None
        for version in sorted(self.earnings, reverse=True):
            reference = self.earnings[version]
            if (version < served and version not in self.rolled_back
                    and reference.n >= self.min_impressions):  # fmt: skip
                break
        else:
            return None
        ratio = msprt(now, reference, TAU_FRACTION * abs(reference.mean))
        if now.mean < reference.mean and ratio >= 1 / self.alpha:
            return Rollback(served, version, now.mean, reference.mean, (now.n, reference.n),
                            ratio)  # fmt: skip
        return None
