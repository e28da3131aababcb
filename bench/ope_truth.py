"""Off-policy estimators against the truth, in the simulator (issue: trust before serving).

One step of the simulated shop is a slate bandit: a shopper (context) is shown k items,
examines slot j with probability 0.85**j and clicks the first examined item they like
(simulator.session: a cascade, which the per-slot estimators' position-based assumption
does not hold for exactly). Reward of a slate: its click and cart rewards (schemas.reward).

Logging policies are serving's own (inference.policy.Policy: epsilon-greedy and softmax
over a noisy scorer), with the propensities serving logs (each slot's, given the slots
before it). Target policies: ``learned`` (greedy on a better scorer), ``popularity`` (one
global ranking), ``random``. Truth: each target run on-policy on fresh contexts. Printed
per (logging, target, estimator): bias and RMSE over repeated logs, relative to the truth.

    .venv/bin/python bench/ope_truth.py [--slates 4000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from inference.policy import Policy
from learner.ope import LoggedSlates, slate_snips, slot_dr, slot_ips, slot_snips
from schemas.reward import Reward
from simulator.session import CART_BAR, CLICK_BAR, POSITION_BIAS
from simulator.shop import Catalog, shoppers, utility

K = 5
REWARD = Reward()


def sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


class Bandit:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.shop = Catalog.generate(300, 10, seed)
        self.people = shoppers(self.shop, 400, seed + 1)
        self.u = np.stack([utility(self.shop, s) for s in self.people])  # [P, N]
        self.click = sigmoid(self.u - CLICK_BAR)
        self.value = REWARD.click + REWARD.cart * sigmoid(self.u - CART_BAR)
        noise = self.rng.normal(0.0, 1.0, self.u.shape)
        self.logging_scores = self.u + 1.5 * noise  # what a mediocre model would score
        self.learned_scores = self.u + 0.5 * self.rng.normal(0.0, 1.0, self.u.shape)
        self.popular = np.argsort(-self.click.mean(0))[:K]

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

    def target(self, name: str, person: int) -> np.ndarray | None:
        if name == "learned":
            return np.argsort(-self.learned_scores[person])[:K]
        if name == "popularity":
            return self.popular
        return None  # random: uniform over slates

    def truth(self, name: str, n: int) -> float:
        total = 0.0
        for _ in range(n):
            person = int(self.rng.integers(len(self.people)))
            slate = self.target(name, person)
            if slate is None:
                slate = self.rng.choice(len(self.shop), K, replace=False)
            total += self.rewards(person, slate).sum()
        return total / n

    def log(self, policy: Policy, target: str, n: int, marginal_draws: int,
            clip: float) -> tuple[LoggedSlates, LoggedSlates]:  # fmt: skip
        """n logged slates, as LoggedSlates with the logged (conditional) propensities
        and with Monte-Carlo marginal propensities of the logging policy."""
        shape = (n, K)
        shown = np.ones(shape, bool)
        mu, marginal, pi, reward = (np.zeros(shape) for _ in range(4))
        q_logged, q_target = np.zeros(shape), np.zeros(shape)
        exam = POSITION_BIAS ** np.arange(K)
        for i in range(n):
            person = int(self.rng.integers(len(self.people)))
            scores = self.logging_scores[person]
            choice = policy.choose(scores, K, self.rng)
            slate = np.array(choice.positions)
            mu[i] = choice.propensities
            counts = np.zeros((K, len(self.shop)))
            for _ in range(marginal_draws):
                draw = policy.choose(scores, K, self.rng).positions
                counts[np.arange(K), draw] += 1
            # The logged draw is one more sample of the same policy: no zero marginals.
            marginal[i] = (counts[np.arange(K), slate] + 1) / (marginal_draws + 1)
            want = self.target(target, person)
            pi[i] = (slate == want) if want is not None else 1.0 / len(self.shop)
            reward[i] = self.rewards(person, slate)
            # A deliberately rough reward model: position-based, from the true click rate
            # blurred by the logging scorer's noise (no estimator gets the truth for free).
            guess = sigmoid(scores - CLICK_BAR) * (REWARD.click + REWARD.cart * 0.3)
            q_logged[i] = exam * guess[slate]
            q_target[i] = exam * (guess[want] if want is not None else guess.mean())
        conditional = LoggedSlates(shown, mu, pi, reward, q_logged, q_target, clip=clip)
        by_marginal = LoggedSlates(shown, marginal, pi, reward, q_logged, q_target, clip=clip)
        return conditional, by_marginal


ESTIMATORS: dict[str, Callable[[LoggedSlates], float]] = {
    "slate_snips": slate_snips, "slot_ips": slot_ips, "slot_snips": slot_snips,
    "slot_dr": slot_dr,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slates", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--marginal-draws", type=int, default=200)
    parser.add_argument("--clip", type=float, default=50.0, help="largest importance weight")
    args = parser.parse_args()
    bandit = Bandit(seed=1)
    logging = {"epsilon-0.3": Policy("epsilon", epsilon=0.3),
               "softmax-1": Policy("softmax", temperature=1.0)}  # fmt: skip
    for target in ("learned", "popularity", "random"):
        truth = bandit.truth(target, 40_000)
        for log_name, policy in logging.items():
            estimates: dict[str, list[float]] = {}
            for _ in range(args.repeats):
                conditional, by_marginal = bandit.log(policy, target, args.slates,
                                                      args.marginal_draws, args.clip)  # fmt: skip
                for name, estimator in ESTIMATORS.items():
                    estimates.setdefault(name, []).append(estimator(conditional))
                    if name != "slate_snips":
                        estimates.setdefault(f"{name}_marginal", []).append(estimator(by_marginal))
            for name, values in estimates.items():
                errors = np.array(values) - truth
                figure("ope_truth", "relative_bias", float(errors.mean() / truth), "1",
                       target=target, logging=log_name, estimator=name,
                       truth=round(float(truth), 4),
                       relative_rmse=round(float(np.sqrt((errors**2).mean()) / truth), 3),
                       slates=args.slates, repeats=args.repeats, clip=args.clip)  # fmt: skip


if __name__ == "__main__":
    main()
