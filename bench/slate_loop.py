"""The demo's closed loop offline, for measuring what the learner takes from slates.

Same shop, shoppers, arms and reward as `recq demo` (simulator/), the same transition
rules (streams.session.Sessionizer) and the same learner code (learner/), without Kafka
or processes: each round every shopper has one session (returning shoppers keep their
history, cart and owned items), then the learner trains a fixed number of updates. So
the comparison of ``RECQ_SLATE_LEARNING`` modes is deterministic per seed and free of
the live run's machine noise. The learned arm shows greedy top-10 slates from the torch
network (the exported ONNX ranking equals it: tests/learner/test_slateq.py), with the
serving filters (owned, in the cart) and popularity for shoppers with no history.

    .venv/bin/python bench/slate_loop.py [--modes off,td,slateq] [--seeds 1,2] [--rounds 10]

One JSON line per (mode, seed): the learned arm's reward per session over the second
half of the rounds, against the oracle arm and the popularity arm of the same run.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from learner.dqn import DQN, slateq_score
from learner.qnet import QNetwork
from learner.replay.buffer import ReplayBuffer
from learner.replay.slates import SlateStore
from learner.trainer import SLATE_WARMUP
from schemas.features import encode_state, interactions_of
from schemas.records import SlateTransition, Transition
from schemas.reward import Reward
from schemas.settings import LearnerSettings
from simulator.session import ShoppingSession, oracle_slate
from simulator.shop import Catalog, Shopper, shoppers
from simulator.traffic import ARMS, LOGGED_ARMS
from streams.session import Interaction, Rules, Sessionizer, UserSession

K = 10
HISTORY = 10
POPULATION = 240  # as in the demo
TIMEOUT_MS = 10_000  # the demo's RECQ_SESSION_TIMEOUT_S


class Loop:
    def __init__(
        self, mode: str, seed: int, updates: int, population: int = POPULATION,
        **overrides: object,
    ) -> None:  # fmt: skip
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.shop = Catalog.generate(2000, 20, seed)
        self.population = shoppers(self.shop, population, seed * 1000 + 1)
        self.reward = Reward()
        self.settings = LearnerSettings(
            slate_learning=mode,
            batch_size=128,
            history_length=HISTORY,
            learner_seed=seed,
            **overrides,
        )  # type: ignore[call-arg]
        self.dqn = DQN(QNetwork(n_items=len(self.shop), dim=64, history_length=HISTORY),
                       self.settings)  # fmt: skip
        self.replay = ReplayBuffer.build(
            capacity=100_000, history_length=HISTORY, device=torch.device("cpu"),
            prioritized=True, n_step=self.settings.n_step, gamma=self.settings.gamma,
        )  # fmt: skip
        self.slates = SlateStore(50_000, HISTORY, torch.device("cpu"))
        self.sessionizer = Sessionizer(
            Rules(reorder_window_ms=0, session_timeout_ms=TIMEOUT_MS, reward_wait_ms=600_000)
        )
        self.sessions: dict[str, UserSession] = {}
        self.carts: dict[str, list[int]] = {}
        self.owned: dict[str, set[int]] = {}
        self.clock: dict[str, int] = {}
        self.popularity: Counter[int] = Counter()
        # The vocabulary: catalog order (the live loop's indices are first-seen order).
        self.index = {item: i for i, item in enumerate(self.shop.item_ids)}
        self.updates = updates
        self.ranking = "slateq" if mode == "slateq" else "q"

    # --- arms -------------------------------------------------------------------------
    def slate(self, arm: str, shopper: Shopper, now: int) -> tuple[list[int], list[float]]:
        user = shopper.user_id
        if arm == "oracle":
            chosen = oracle_slate(self.shop, shopper, K, self.reward, self.carts[user],
                                  self.owned[user])  # fmt: skip
            return chosen, [1.0] * K
        if arm == "random":
            n = len(self.shop)
            drawn = [int(i) for i in self.rng.choice(n, K, replace=False)]
            return drawn, [1.0 / (n - j) for j in range(K)]
        history = self.sessions[user].history
        if arm == "popularity" or not history or self.dqn.updates == 0:
            excluded = set(self.carts[user]) | self.owned[user] if arm == "learned" else set()
            top = [i for i, _ in self.popularity.most_common(K + len(excluded))
                   if i not in excluded][:K]  # fmt: skip
            return top, [1.0] * len(top)
        return self.learned(user, history, now), [1.0] * K

    @torch.no_grad()
    def learned(self, user: str, history: list[list[object]], now: int) -> list[int]:
        state = encode_state(history[-HISTORY:], now)
        pad = HISTORY - len(state["items"])
        row = [torch.tensor([[0] * pad + state[k]]) for k in ("items", "events", "ages")]
        net = self.dqn.online
        hidden, u, v = net.encode(*row)
        score = net.q_all(u, v)
        if self.ranking == "slateq":
            score = slateq_score(net.appeal_all(hidden), score)
        excluded = list(set(self.carts[user]) | self.owned[user])
        if excluded:
            score[0, excluded] = -torch.inf
        return [int(i) for i in torch.topk(score[0], K).indices]

    # --- one round --------------------------------------------------------------------
    def session(self, arm: str, shopper: Shopper) -> float:
        user = shopper.user_id
        for store, empty in ((self.sessions, UserSession), (self.carts, list), (self.owned, set)):
            store.setdefault(user, empty())  # type: ignore[operator]
        start = self.clock.get(user, 1_790_000_000_000) + 60_000
        session = ShoppingSession(self.shop, shopper, self.rng, start, 1_000,
                                  cart=self.carts[user], owned=self.owned[user],
                                  reward=self.reward)  # fmt: skip
        state, logged, out = self.sessions[user], arm in LOGGED_ARMS, []
        for step in range(20):
            if session.ended:
                break
            items, propensities = self.slate(arm, shopper, session.ts)
            rec_id = f"{user}-{start}-{step}"
            if logged and items:
                out += self.sessionizer.on_recommendation(
                    state, rec_id=rec_id, served_ts_ms=session.ts + 1, items=items,
                    propensities=propensities, policy=arm, model_version="1",
                    wall_ms=session.ts, user_id=user,
                ).transitions  # fmt: skip
            for event in session.step((rec_id, items) if items else None):
                if not logged:
                    continue
                touched = interactions_of(event)
                batch = [
                    Interaction(event.ts_ms, event.event_id, x.line, self.index[x.item_id],
                                x.code, event.rec_id, x.last_line, position=event.position,
                                revenue=x.revenue)
                    for x in touched
                ]  # fmt: skip
                out += self.sessionizer.on_event(state, user, batch, event.ts_ms).transitions
                if event.type == "click":
                    self.popularity[self.index[event.item_id]] += 1
        self.clock[user] = session.ts
        if logged:
            out += self.sessionizer.on_tick(state, user, session.ts + TIMEOUT_MS + 1).transitions
            self.replay.add([Transition.model_validate(t, strict=False)
                             for t in out if t["kind"] == "organic"])  # fmt: skip
            self.slates.add([SlateTransition.model_validate(t, strict=False)
                             for t in out if t["kind"] == "slate"])  # fmt: skip
        return session.outcome.reward

    def train(self) -> None:
        for _ in range(self.updates):
            batch = self.replay.sample(self.settings.batch_size)
            slates = None
            if self.settings.slate_learning != "off" and len(self.slates) >= SLATE_WARMUP:
                slates = self.slates.sample(self.settings.slate_batch_size)
            stats = self.dqn.update(batch, slates)
            self.replay.update_priorities(batch, stats.td_error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="off,td,slateq")
    parser.add_argument("--seeds", default="1")
    # The demo's 240 s: each shopper comes back ~40 times; the learner makes ~3,700 updates.
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--updates", type=int, default=100, help="updates per round")
    parser.add_argument("--population", type=int, default=POPULATION, help="shoppers")
    args = parser.parse_args()
    for seed in [int(s) for s in args.seeds.split(",")]:
        for mode in args.modes.split(","):
            loop = Loop(mode, seed, args.updates, args.population)
            rewards: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}
            with Progress(transient=True) as progress:
                task = progress.add_task(f"{mode}, seed {seed}", total=args.rounds)
                for _ in range(args.rounds):
                    order = loop.rng.permutation(len(loop.population))
                    got: dict[str, list[float]] = {arm: [] for arm in ARMS}
                    for i in order:
                        arm = ARMS[i % len(ARMS)]
                        got[arm].append(loop.session(arm, loop.population[i]))
                    for arm in ARMS:
                        rewards[arm].append(got[arm])
                    loop.train()
                    progress.advance(task)
            late = {
                arm: float(np.mean([x for row in rows[args.rounds // 2 :] for x in row]))
                for arm, rows in rewards.items()
            }
            curve = [round(float(np.mean(r)), 3) for r in rewards["learned"]]
            figure("slate_loop", "learned_of_oracle", late["learned"], "reward/session",
                   baseline="oracle", baseline_value=late["oracle"], mode=mode, seed=seed,
                   of_popularity=round(late["learned"] / late["popularity"], 3),
                   popularity=round(late["popularity"], 3), random=round(late["random"], 3),
                   learned_by_round=curve, rounds=args.rounds, population=args.population,
                   updates_per_round=args.updates)  # fmt: skip


if __name__ == "__main__":
    main()
