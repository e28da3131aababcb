"""Off-policy estimators against the truth, in the simulator (issue: trust before serving).

One step of the simulated shop is a slate bandit: a shopper (context) is shown k items,
examines slot j with probability 0.85**j and clicks the first examined item they like
(simulator.session: a cascade). Reward of a slate: its click and cart rewards
(schemas.reward).

Logging policies are serving's own (schemas.exploration.Policy: epsilon-greedy and softmax
over the top-C candidates of a noisy scorer, as serving explores over the snapshot's
top-K), with the propensities serving logs (each slot's, given the slots before it).
Target policies: ``next-snapshot`` (the gate's case: serving's epsilon-greedy over a
scorer a little better than the logger's), ``learned`` (greedy on a much better scorer),
``popularity`` (one global ranking), ``random`` (uniform). Truth: each target run
on-policy on fresh contexts. Printed per (logging, target, estimator): bias and RMSE
over repeated logs, relative to the truth.

    .venv/bin/python bench/ope_truth.py [--slates 3000] [--repeats 10] [--clip 50]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from learner.ope import (
    LoggedSlates,
    cascade_dr,
    cascade_ips,
    cascade_snips,
    slate_snips,
    slot_dr,
    slot_ips,
    slot_snips,
)
from schemas.exploration import Policy
from schemas.reward import Reward
from simulator.session import CART_BAR, CLICK_BAR, POSITION_BIAS
from simulator.shop import Catalog, shoppers, utility

K = 5
CANDIDATES = 50  # serving explores over the snapshot's top-K (RECQ_SNAPSHOT_TOP_K); --candidates
REWARD = Reward()
EXAM = POSITION_BIAS ** np.arange(K)


def sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


class Target:
    """A target policy: serving's ``policy`` over ``scores`` [P, N] restricted to each
    row's top-C, or uniform over the catalog (``scores`` None)."""

    def __init__(self, policy: Policy, scores: np.ndarray | None, candidates: int) -> None:
        self.policy, self.scores, self.c = policy, scores, candidates

    def candidates(self, person: int) -> np.ndarray | None:
        if self.scores is None:
            return None
        return np.argsort(-self.scores[person], kind="stable")[: self.c]

    def draw(self, person: int, n_items: int, rng: np.random.Generator) -> np.ndarray:
        cands = self.candidates(person)
        if cands is None:
            return rng.choice(n_items, K, replace=False)
        assert self.scores is not None
        return cands[self.policy.choose(self.scores[person, cands], K, rng).positions]

    def conditionals(self, person: int, slate: np.ndarray, n_items: int,
                     guess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """pi(logged item at j | logged items above) and E_pi[guess at j | above]."""
        cands = self.candidates(person)
        if cands is None:
            expected = np.array([(guess.sum() - guess[slate[:j]].sum()) / (n_items - j)
                                 for j in range(K)])  # fmt: skip
            return np.array([1 / (n_items - j) for j in range(K)]), expected
        assert self.scores is not None
        where = {int(c): i for i, c in enumerate(cands)}
        picks = np.array([[where.get(int(a), -1) for a in slate]])
        scores = self.scores[person, cands][None]
        pi = self.policy.probabilities(scores, picks)[0]
        expected = self.policy.slot_distributions(scores, picks)[0] @ guess[cands]
        return pi, expected


class Bandit:
    def __init__(self, seed: int, candidates: int = CANDIDATES) -> None:
        self.candidates = candidates
        self.rng = np.random.default_rng(seed)
        self.shop = Catalog.generate(300, 10, seed)
        self.people = shoppers(self.shop, 400, seed + 1)
        self.u = np.stack([utility(self.shop, s) for s in self.people])  # [P, N]
        self.click = sigmoid(self.u - CLICK_BAR)
        self.value = REWARD.click + REWARD.cart * sigmoid(self.u - CART_BAR)
        noise = self.rng.normal(0.0, 1.0, self.u.shape)
        self.logging_scores = self.u + 1.5 * noise  # what a mediocre model would score
        # The next snapshot: the same model a little further trained.
        self.next_scores = self.u + 1.2 * noise + 0.5 * self.rng.normal(0.0, 1.0, self.u.shape)
        self.learned_scores = self.u + 0.5 * self.rng.normal(0.0, 1.0, self.u.shape)
        popular = np.tile(self.click.mean(0), (len(self.people), 1))
        greedy = Policy("greedy")
        self.targets = {
            "next-snapshot": Target(Policy("epsilon", epsilon=0.1), self.next_scores, candidates),
            "learned": Target(greedy, self.learned_scores, candidates),
            "popularity": Target(greedy, popular, candidates),
            "random": Target(greedy, None, candidates),
        }

    def rewards(self, person: int, slate: np.ndarray) -> np.ndarray:
        """Per-slot rewards of one shown slate (cascade: the first examined, liked item)."""
        out = np.zeros(len(slate))
        for j, item in enumerate(slate):
            if (
                self.rng.random() < POSITION_BIAS**j
                and self.rng.random() < self.click[person, item]
            ):
                out[j] = self.value[person, item]  # expected cart value given the click
                break
        return out

    def truth(self, name: str, n: int) -> float:
        target = self.targets[name]
        total = 0.0
        for _ in range(n):
            person = int(self.rng.integers(len(self.people)))
            total += self.rewards(person, target.draw(person, len(self.shop), self.rng)).sum()
        return total / n

    def log(self, policy: Policy, target: str, n: int, clip: float) -> LoggedSlates:
        """n slates logged by ``policy`` over the logging scorer's top-C, with the
        target's conditional probabilities of the logged slots."""
        shape = (n, K)
        mu, pi, reward, q_logged, q_target = (np.zeros(shape) for _ in range(5))
        logger = Target(policy, self.logging_scores, self.candidates)
        for i in range(n):
            person = int(self.rng.integers(len(self.people)))
            cands = logger.candidates(person)
            assert cands is not None
            choice = policy.choose(self.logging_scores[person, cands], K, self.rng)
            slate = cands[choice.positions]
            mu[i] = choice.propensities
            reward[i] = self.rewards(person, slate)
            # A deliberately rough reward model: position-based, from the logging
            # scorer's noisy utilities (no estimator gets the truth for free).
            guess = sigmoid(self.logging_scores[person] - CLICK_BAR) * (
                REWARD.click + REWARD.cart * 0.3)  # fmt: skip
            pi[i], expected = self.targets[target].conditionals(person, slate, len(self.shop),
                                                                 guess)  # fmt: skip
            q_logged[i] = EXAM * guess[slate]
            q_target[i] = EXAM * expected
        return LoggedSlates(np.ones(shape, bool), mu, pi, reward, q_logged, q_target, clip=clip)


ESTIMATORS: dict[str, Callable[[LoggedSlates], float]] = {
    "slate_snips": slate_snips, "slot_ips": slot_ips, "slot_snips": slot_snips,
    "slot_dr": slot_dr, "cascade_ips": cascade_ips, "cascade_snips": cascade_snips,
    "cascade_dr": cascade_dr,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slates", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--clip", type=float, default=50.0, help="largest importance weight")
    parser.add_argument("--targets", default="next-snapshot,learned,popularity,random")
    parser.add_argument(
        "--candidates",
        type=int,
        default=CANDIDATES,
        help="items each policy draws from (its scorer's top-C); 300 = all",
    )
    args = parser.parse_args()
    bandit = Bandit(seed=1, candidates=args.candidates)
    logging = {"epsilon-0.1": Policy("epsilon", epsilon=0.1),
               "softmax-1": Policy("softmax", temperature=1.0)}  # fmt: skip
    for target in args.targets.split(","):
        truth = bandit.truth(target, 40_000)
        for log_name, policy in logging.items():
            estimates: dict[str, list[float]] = {}
            for _ in range(args.repeats):
                data = bandit.log(policy, target, args.slates, args.clip)
                for name, estimator in ESTIMATORS.items():
                    estimates.setdefault(name, []).append(estimator(data))
            for name, values in estimates.items():
                errors = np.array(values) - truth
                figure("ope_truth", "relative_bias", float(errors.mean() / truth), "1",
                       target=target, logging=log_name, estimator=name,
                       truth=round(float(truth), 4),
                       relative_rmse=round(float(np.sqrt((errors**2).mean()) / truth), 3),
                       slates=args.slates, repeats=args.repeats, clip=args.clip,
                       candidates=args.candidates)  # fmt: skip


if __name__ == "__main__":
    main()
