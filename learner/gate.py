"""The off-policy gate: a snapshot is served only when the logs say it is not worse.

Before a new snapshot is announced, it and the snapshot members serve now are both
scored on the most recent ``RECQ_GATE_SLATES`` closed slates (``SlateWindow``), as the
policies serving would run: each snapshot's ONNX top-K for the logged state, drawn from
with serving's exploration (``RECQ_EXPLORATION``, ``RECQ_EPSILON``,
``RECQ_SOFTMAX_TEMPERATURE``: settings both stages read; a warning when the slates say
serving ran another). For each logged slot that gives the target's probability of the item
shown there given the slots above it; with the logged propensities,
``learner.ope.cascade_snips`` estimates each policy's reward per slate, and a paired
bootstrap the interval of (candidate - current). Only the leading slots whose estimates
are worth ``MIN_EFFECTIVE_SLATES`` logged slates for both policies are compared (the
rest are noise when the rankings differ); none, or logs that could not have shown what
either policy puts first (``MIN_COVERAGE``): rejected, for lack of support. The
candidate is promoted if

    low(candidate - current) > -RECQ_GATE_MARGIN x current

at ``LEVEL`` (two-sided; the bound is one-sided at (1 - LEVEL) / 2). Otherwise it stays on
disk with its estimates in the manifest, is not announced, and is counted
(``recq_learner_snapshots_total{result="ope_rejected"}``). With no snapshot served yet,
"current" is the logging policies themselves (their on-policy mean reward). With fewer
than ``RECQ_GATE_MIN_SLATES`` logged slates there is nothing to judge on: the snapshot
is promoted as ``unjudged``.

Approximations, each the same for both policies (so it cancels in the difference they
are judged on): a logged state with no item the snapshot knows would be served by the
members' popularity fallback, which the learner cannot replay, so its slots get the
logged propensities (weight 1); the exclusions serving applies are rebuilt from the
state (items bought, items in the cart), not from the shop's request.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from learner.ope import (
    LoggedSlates,
    cascade_snips_terms,
    effective_sizes,
    paired_snips_bootstrap,
    snips_value,
)
from schemas.exploration import Policy
from schemas.features import EVENT_CODES
from schemas.manifest import EXCLUDED_SCORE, GateResult
from schemas.model_store import ModelStore
from schemas.records import SlateTransition

log = logging.getLogger("recq.learner")

ESTIMATOR = "cascade_snips"
#: Two-sided level of the bootstrap interval of (candidate - current).
LEVEL = 0.9
RESAMPLES = 500
#: Largest importance weight of a slot prefix (bench/ope_truth.py measured the bias).
CLIP = 50.0
#: A slot is compared only if its estimate is worth this many logged slates (Kish's
#: effective sample size) for both policies, and so are the slots above it.
MIN_EFFECTIVE_SLATES = 30.0
#: The logs must have been able to show at least this share of what each policy would
#: put first (``LoggedSlates.coverage``): below, the estimate is the logging policies'
#: own value in disguise.
MIN_COVERAGE = 0.5
#: States scored per onnxruntime call.
CHUNK = 1024


@dataclass(frozen=True, slots=True)
class LoggedSlate:
    """What the gate keeps of a closed slate: the logged state, the slots, the outcome."""

    items: np.ndarray  # state, oldest first (int64)
    events: np.ndarray
    ages: np.ndarray
    slate: np.ndarray  # item indices in slot order
    propensities: np.ndarray
    shown: np.ndarray
    rewards: np.ndarray
    policy: str
    model_version: str

    @classmethod
    def of(cls, t: SlateTransition) -> LoggedSlate:
        return cls(
            np.asarray(t.state.items, np.int64), np.asarray(t.state.events, np.int64),
            np.asarray(t.state.ages, np.int64), np.asarray(t.items, np.int64),
            np.asarray(t.propensities, np.float64), np.asarray(t.shown, bool),
            np.asarray(t.rewards, np.float64), t.policy, t.model_version,
        )  # fmt: skip


class SlateWindow:
    """The most recent closed slates (written by the feed, read by the trainer thread)."""

    def __init__(self, size: int) -> None:
        self._slates: deque[LoggedSlate] = deque(maxlen=size)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._slates)

    def add(self, transitions: Iterable[SlateTransition]) -> None:
        rows = [LoggedSlate.of(t) for t in transitions]
        with self._lock:
            self._slates.extend(rows)

    def recent(self) -> list[LoggedSlate]:
        with self._lock:
            return list(self._slates)


def logged_serving_policy(slates: Sequence[LoggedSlate]) -> Policy | None:
    """The exploration serving ran, from the newest slate a serving member logged (a
    baseline's slates carry other names); None when none did."""
    for slate in reversed(slates):
        try:
            return Policy.from_name(slate.policy)
        except ValueError:
            continue
    return None


def excluded_by_state(items: np.ndarray, events: np.ndarray) -> set[int]:
    """Items serving would not show for this state: bought, or in the cart."""
    bought: set[int] = set()
    cart: set[int] = set()
    for item, code in zip(items.tolist(), events.tolist(), strict=True):
        if code == EVENT_CODES["purchase"]:
            bought.add(item)
            cart.discard(item)
        elif code == EVENT_CODES["cart"]:
            cart.add(item)
        elif code == EVENT_CODES["cart_remove"]:
            cart.discard(item)
    return bought | cart


class SnapshotPolicy:
    """A snapshot's ONNX graph as a target policy over logged slates."""

    def __init__(self, model: bytes, n_items: int, history_length: int, name: str) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1  # the trainer's thread; training owns the rest
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.n_items, self.history_length, self.name = n_items, history_length, name

    def probabilities(self, slates: Sequence[LoggedSlate], policy: Policy,
                      slots: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """pi [n, slots]: this policy's probability of each logged slot given the slots
        above it; and [n] whether the snapshot would answer the state at all (a state
        with no known item is answered by serving's popularity fallback)."""
        n, length = len(slates), self.history_length
        items = np.zeros((n, length), np.int64)
        events = np.zeros((n, length), np.int64)
        ages = np.zeros((n, length), np.int64)
        exclude_lists: list[list[int]] = []
        for i, s in enumerate(slates):
            known = s.items < self.n_items  # unknown items left out, as serving does
            m = int(min(length, known.sum()))
            if m:
                items[i, length - m :] = s.items[known][-m:]
                events[i, length - m :] = s.events[known][-m:]
                ages[i, length - m :] = s.ages[known][-m:]
            exclude_lists.append(sorted(x for x in excluded_by_state(s.items, s.events)
                                        if x < self.n_items))  # fmt: skip
        answered: np.ndarray = np.asarray(events.any(1))
        width = max(1, max(len(x) for x in exclude_lists))
        exclude = np.full((n, width), -1, np.int64)
        for i, x in enumerate(exclude_lists):
            exclude[i, : len(x)] = x
        indices_parts, scores_parts = [], []
        for start in range(0, n, CHUNK):
            part = slice(start, start + CHUNK)
            feeds = {"items": items[part], "events": events[part], "ages": ages[part],
                     "exclude": exclude[part]}  # fmt: skip
            idx, sc = self.session.run(None, feeds)
            indices_parts.append(idx)
            scores_parts.append(sc)
        indices = np.concatenate(indices_parts) if indices_parts else np.zeros((0, 1), np.int64)
        scores = np.concatenate(scores_parts).astype(np.float64) if scores_parts else indices * 0.0
        scores[scores <= EXCLUDED_SCORE / 2] = -np.inf  # not a candidate
        logged_items = np.full((n, slots), -2, np.int64)  # -2: no slot (never a candidate)
        for i, s in enumerate(slates):
            logged_items[i, : min(slots, len(s.slate))] = s.slate[:slots]
        # Where each logged item sits among the candidates (-1: not a candidate).
        hit = (logged_items[:, :, None] == indices[:, None, :]) & np.isfinite(scores)[:, None, :]
        picks = np.where(hit.any(2), hit.argmax(2), -1)
        return policy.probabilities(scores, picks), answered


def logged(slates: Sequence[LoggedSlate], slots: int) -> LoggedSlates:
    """The logged side of the estimate (target filled in per policy)."""
    n = len(slates)
    shown = np.zeros((n, slots), bool)
    mu = np.zeros((n, slots))
    reward = np.zeros((n, slots))
    for i, s in enumerate(slates):
        k = min(slots, len(s.slate))
        shown[i, :k], mu[i, :k], reward[i, :k] = s.shown[:k], s.propensities[:k], s.rewards[:k]
    return LoggedSlates(shown, mu, mu.copy(), reward, clip=CLIP)


def with_target(data: LoggedSlates, pi: np.ndarray, answered: np.ndarray) -> LoggedSlates:
    # Rows the snapshot would not answer keep pi = mu (popularity serves them either way).
    target = np.where(answered[:, None], pi, data.logging)
    return LoggedSlates(data.shown, data.logging, target, data.reward, clip=data.clip)


class Gate:
    """Judges candidates against the snapshot members serve (``ModelStore.serving_version``)."""

    def __init__(self, *, window: SlateWindow, store: ModelStore, policy: Policy,
                 margin: float, min_slates: int, seed: int = 0) -> None:  # fmt: skip
        self.window, self.store, self.policy = window, store, policy
        self._warned: set[str] = set()
        self.margin, self.min_slates = margin, min_slates
        self._rng = np.random.default_rng(seed)
        self._current: SnapshotPolicy | None = None
        self._current_version: int | None = None

    def current(self) -> SnapshotPolicy | None:
        version = self.store.serving_version()
        if version is None:
            return None
        if version != self._current_version:
            manifest = self.store.manifest(version)
            model = (self.store.path(version) / "model.onnx").read_bytes()
            self._current = SnapshotPolicy(model, manifest.n_items, manifest.history_length,
                                           str(version))  # fmt: skip
            self._current_version = version
        return self._current

    def judge(self, model: bytes, n_items: int, history_length: int) -> GateResult:
        slates = self.window.recent()
        if len(slates) < self.min_slates:
            return GateResult(decision="unjudged", slates=len(slates),
                              reason=f"{len(slates)} logged slates < RECQ_GATE_MIN_SLATES "
                              f"{self.min_slates}")  # fmt: skip
        slots = max(len(s.slate) for s in slates)
        policy = self.policy
        served = logged_serving_policy(slates)
        if served is not None and served != policy and served.name not in self._warned:
            self._warned.add(served.name)
            log.warning("serving logs its slates as %s but the learner's RECQ_EXPLORATION "
                        "settings say %s: the gate judges candidates as %s; give both stages "
                        "the same RECQ_EXPLORATION / RECQ_EPSILON / RECQ_SOFTMAX_TEMPERATURE",
                        served.name, policy.name, policy.name)  # fmt: skip
        data = logged(slates, slots)
        candidate = SnapshotPolicy(model, n_items, history_length, "candidate")
        cand = with_target(data, *candidate.probabilities(slates, policy, slots))
        current = self.current()
        if current is None:  # nothing served yet: judged against the logging policies
            base, against = data, "logging"
        else:
            base = with_target(data, *current.probabilities(slates, policy, slots))
            against = current.name
        cand_terms, base_terms = cascade_snips_terms(cand), cascade_snips_terms(base)
        # Deep slots are matched by few logged slates when the two rankings differ: an
        # estimate worth a handful of slates is noise, not evidence. Compare the leading
        # slots the logs support (under the cascade their rewards depend on nothing below).
        size = np.minimum(effective_sizes(cand_terms[1]), effective_sizes(base_terms[1]))
        # Coverage is checked on the first slot only: deeper, its estimate rests on rare
        # full-prefix matches (unbiased, but too noisy to decide on).
        coverage = np.minimum(cand.coverage(), base.coverage())
        supported = size >= MIN_EFFECTIVE_SLATES
        depth = slots if supported.all() else int(np.argmin(supported))
        if coverage[0] < MIN_COVERAGE:
            depth = 0
        if depth == 0:
            return GateResult(
                decision="rejected", against=against, slates=len(slates), estimator=ESTIMATOR,
                reason=f"the {len(slates)} logged slates do not support the candidate's first "
                f"slot (effective size {size[0]:.1f}, min {MIN_EFFECTIVE_SLATES:g}; coverage "
                f"{coverage[0]:.3f}, min {MIN_COVERAGE:g}): serve with more exploration "
                "(RECQ_EPSILON) so the logs cover what a new snapshot would show",
            )  # fmt: skip
        cand_terms = (cand_terms[0][:, :depth], cand_terms[1][:, :depth])
        base_terms = (base_terms[0][:, :depth], base_terms[1][:, :depth])
        seed = int(self._rng.integers(2**31))
        diff = paired_snips_bootstrap(cand_terms, base_terms, resamples=RESAMPLES, level=LEVEL,
                                      seed=seed)  # fmt: skip
        current_value, candidate_value = snips_value(*base_terms), snips_value(*cand_terms)
        tolerated = self.margin * abs(current_value)
        promoted = diff.low > -tolerated
        reason = (
            f"{ESTIMATOR} on {len(slates)} slates ({policy.name}), top {depth} of {slots} "
            f"slots: candidate {candidate_value:.4f} vs {against} {current_value:.4f} per "
            f"slate, difference {diff.estimate:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}] at "
            f"{LEVEL:.0%}; {'above' if promoted else 'below'} -{tolerated:.4f} "
            f"(margin {self.margin:g})"
        )
        return GateResult(
            decision="promoted" if promoted else "rejected", reason=reason, against=against,
            slates=len(slates), slots=depth, estimator=ESTIMATOR, candidate=candidate_value,
            current=current_value, low=diff.low, high=diff.high, margin=tolerated,
        )  # fmt: skip
