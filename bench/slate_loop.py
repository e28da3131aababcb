"""The demo's closed loop offline: what each ranking earns against the controls a shop
would deploy instead, in the default shop and in one where browsing misleads.

Same shop, shoppers and reward as `recq demo` (simulator/), the same transition rules
(streams.session.Sessionizer) and the same learner code (learner/), without Kafka or
processes, so a comparison is deterministic per seed and free of live-run noise. Each
round every shopper has one session (returning shoppers keep their history, cart and
owned items); then the learner (and the supervised control) train a fixed number of
updates. Shoppers are split between arms by a hash of their id:

  learned     the learner's network, ranked as its snapshots rank (learner.export.
              ranking_scores: RECQ_RANKING), top-50 with the serving filters (owned, in
              the cart), slates drawn by epsilon-greedy (serving's default) with logged
              propensities; popularity for a shopper with no history (as serving does)
  coview      item co-occurrence in sessions, updated online (simulator/controls.py)
  supervised  a next-item softmax model on the same organic transitions
  popularity  most clicked items;  random  uniform;  oracle  the hidden tastes (off the log)

Every arm but the oracle is logged: the learner learns from all of their slates.
Variants (the ablation): ``response`` (the defaults: RECQ_RANKING=response, item features,
no organic prior), ``response-prior`` (plus the supervised head as organic prior),
``q-slates`` (the previous default: Q ranking, slate TD, organic reward 1), ``organic``
(Q ranking from organic transitions only); ``--set item_features=false`` takes the
catalog features away from the learner and the supervised control. Shops: ``default``
and ``misleading`` (half
the items' organic appeal is another item's: simulator/shop.py).

    .venv/bin/python bench/slate_loop.py [--variants response,q-slates] [--shops default,misleading]
        [--seeds 1,2,3] [--rounds 24] [--population 960] [--updates 100]
        [--set response_prior_impressions=5 ...]

One JSON line per (variant, shop, seed) and one per (variant, shop) pooling the seeds'
shoppers: every arm's reward per session over the second half with a 95% bootstrap
interval over shoppers, the learned arm's ratio to each other arm with its interval, the
learned arm by thirds, its greedy and exploration picks' reward per impression, and
diagnostics per arm. ``reports/slate_loop/<run>/`` gets metrics.json and a PNG.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import torch
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from bench.slate_arms import SupervisedControl
from learner.dqn import DQN
from learner.export import ranking_scores
from learner.qnet import QNetwork
from learner.replay.buffer import ReplayBuffer
from learner.replay.slates import SlateStore
from learner.trainer import SLATE_WARMUP, learns_from_slates
from schemas.exploration import Policy
from schemas.features import category_bucket, encode_state, interactions_of, price_feature
from schemas.records import SlateTransition, Transition
from schemas.reward import Reward
from schemas.settings import LearnerSettings
from simulator.compare import ArmRewards, arm_of, ratio_interval, reward_interval
from simulator.controls import CoView
from simulator.session import ShoppingSession, oracle_slate
from simulator.shop import Catalog, Shopper, shoppers, utility
from streams.session import Interaction, Rules, Sessionizer, UserSession

K = 10
CANDIDATES = 50  # the snapshot's top-K that serving draws a slate from
HISTORY = 10
TIMEOUT_MS = 10_000  # the demo's RECQ_SESSION_TIMEOUT_S
ARMS = ("learned", "coview", "supervised", "popularity", "random", "oracle")
LOGGED = ARMS[:-1]
CONTROLS = ("coview", "supervised")
SHOPS = {"default": 0.0, "misleading": 0.5}
VARIANTS: dict[str, dict[str, object]] = {
    "response": {},
    "response-prior": {"supervised_head": True},
    "q-slates": {"ranking": "q", "slate_learning": "td", "organic_reward": 1.0,
                 "supervised_head": False},
    "organic": {"ranking": "q", "slate_learning": "off", "organic_reward": 1.0,
                "supervised_head": False},
}  # fmt: skip


@dataclass
class Picks:
    """Reward per impression of the learned arm's greedy and exploration picks."""

    shown: Counter[str] = field(default_factory=Counter)
    reward: Counter[str] = field(default_factory=Counter)

    def per_impression(self, kind: str) -> float:
        return self.reward[kind] / self.shown[kind] if self.shown[kind] else 0.0


class Loop:
    def __init__(self, variant: str, shop: str, seed: int, updates: int, population: int,
                 epsilon: float, overrides: dict[str, str] | None = None) -> None:  # fmt: skip
        torch.manual_seed(seed)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.shop = Catalog.generate(2000, 20, seed, misleading=SHOPS[shop])
        self.population = shoppers(self.shop, population, seed * 1000 + 1)
        self.arm = {s.user_id: arm_of(s.user_id, ARMS, salt=str(seed)) for s in self.population}
        self.reward = Reward()
        self.settings = LearnerSettings(
            batch_size=128, history_length=HISTORY, learner_seed=seed,
            **{**VARIANTS[variant], **(overrides or {})},  # type: ignore[arg-type]
        )  # fmt: skip
        self.dqn = DQN(QNetwork(n_items=len(self.shop), dim=64, history_length=HISTORY,
                                supervised_head=self.settings.supervised_head,
                                prior_impressions=self.settings.response_prior_impressions,
                                q_prior=self.settings.response_prior == "next_item+q"),
                       self.settings)  # fmt: skip
        self.control = SupervisedControl(len(self.shop), HISTORY, self.settings.learning_rate)
        if self.settings.item_features:  # what the catalog topic says about every item
            index = torch.arange(len(self.shop))
            category = torch.tensor([category_bucket(self.shop.category_name(i))
                                     for i in range(len(self.shop))])  # fmt: skip
            price = torch.tensor([price_feature(float(p)) for p in self.shop.price])
            self.dqn.set_features(index, category, price)
            self.control.net.set_features(index, category, price)
        self.coview = CoView(len(self.shop))
        self.replay = ReplayBuffer.build(
            capacity=100_000, history_length=HISTORY, device=torch.device("cpu"),
            prioritized=True, n_step=self.settings.n_step, gamma=self.settings.gamma,
        )  # fmt: skip
        self.slates = SlateStore(50_000, HISTORY, torch.device("cpu"))
        self.sessionizer = Sessionizer(
            Rules(reorder_window_ms=0, session_timeout_ms=TIMEOUT_MS, reward_wait_ms=600_000)
        )
        self.policy = Policy("epsilon", epsilon) if epsilon > 0 else Policy("greedy")
        self.sessions: dict[str, UserSession] = {}
        self.carts: dict[str, list[int]] = defaultdict(list)
        self.owned: dict[str, set[int]] = defaultdict(set)
        self.clock: dict[str, int] = {}
        self.popularity = np.zeros(len(self.shop))
        self.index = {item: i for i, item in enumerate(self.shop.item_ids)}
        self.updates = updates
        self.picks = Picks()

    # --- arms -------------------------------------------------------------------------
    def _state(self, history: list[list[int]], now: int) -> tuple[torch.Tensor, ...]:
        state = encode_state(history[-HISTORY:], now)  # type: ignore[arg-type]
        pad = HISTORY - len(state["items"])
        return tuple(torch.tensor([[0] * pad + state[k]]) for k in ("items", "events", "ages"))

    @torch.no_grad()
    def scores(self, arm: str, user: str, now: int) -> np.ndarray | None:
        """The arm's scores over the catalog (None: it falls back to popularity)."""
        history = self.sessions[user].history
        if not history:
            return None
        if arm == "coview":
            return self.coview.scores([h[0] for h in history])
        if arm == "supervised":
            return self.control.scores(self._state(history, now)) if self.dqn.updates else None
        if self.dqn.updates == 0:
            return None
        items, events, ages = self._state(history, now)
        out: np.ndarray = ranking_scores(self.dqn.online, self.settings.ranking, items, events,
                                         ages)[0].numpy()  # fmt: skip
        return out

    def slate(
        self, arm: str, shopper: Shopper, now: int
    ) -> tuple[list[int], list[float], list[bool]]:
        """(items, propensities, greedy?) of the slate ``arm`` shows now."""
        user = shopper.user_id
        if arm == "oracle":
            chosen = oracle_slate(self.shop, shopper, K, self.reward, self.carts[user],
                                  self.owned[user])  # fmt: skip
            return chosen, [1.0] * K, [True] * K
        n = len(self.shop)
        if arm == "random":
            drawn = [int(i) for i in self.rng.choice(n, K, replace=False)]
            return drawn, [1.0 / (n - j) for j in range(K)], [True] * K
        score = None if arm == "popularity" else self.scores(arm, user, now)
        if score is None:
            score = self.popularity.copy()
        score = score.astype(np.float64)
        # The serving filters: nothing the shopper owns or has in the cart.
        excluded = list(set(self.carts[user]) | self.owned[user])
        score[excluded] = -np.inf
        top = np.argsort(-score, kind="stable")[:CANDIDATES]
        if arm != "learned":
            return [int(i) for i in top[:K]], [1.0] * K, [True] * K
        choice = self.policy.choose(score[top], K, self.rng)
        items = [int(top[p]) for p in choice.positions]
        # A pick is greedy if it was the best candidate left when its slot was filled.
        left, greedy = list(range(len(top))), []
        for p in choice.positions:
            greedy.append(p == left[0])
            left.remove(p)
        return items, choice.propensities, greedy

    # --- one session ------------------------------------------------------------------
    def session(self, shopper: Shopper) -> float:
        user, arm = shopper.user_id, self.arm[shopper.user_id]
        self.sessions.setdefault(user, UserSession())
        start = self.clock.get(user, 1_790_000_000_000) + 60_000
        session = ShoppingSession(self.shop, shopper, self.rng, start, 1_000,
                                  cart=self.carts[user], owned=self.owned[user],
                                  reward=self.reward)  # fmt: skip
        state, logged, out = self.sessions[user], arm in LOGGED, []
        for step in range(20):
            if session.ended:
                break
            items, propensities, greedy = self.slate(arm, shopper, session.ts)
            rec_id = f"{user}-{start}-{step}"
            if logged and items:
                out += self.sessionizer.on_recommendation(
                    state, rec_id=rec_id, served_ts_ms=session.ts + 1, items=items,
                    propensities=propensities, policy=arm, model_version="1",
                    wall_ms=session.ts, user_id=user,
                ).transitions  # fmt: skip
            slot_reward = [0.0] * len(items)
            for event in session.step((rec_id, items) if items else None):
                if event.rec_id == rec_id and event.position is not None:
                    slot_reward[event.position] += self.reward.of_events([event])
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
                    item = self.index[event.item_id]
                    self.popularity[item] += 1
                    self.coview.observe(user, item)
            if arm == "learned":
                for is_greedy, r in zip(greedy, slot_reward, strict=True):
                    kind = "greedy" if is_greedy else "explore"
                    self.picks.shown[kind] += 1
                    self.picks.reward[kind] += r
        self.clock[user] = session.ts
        self.coview.end_session(user)
        if logged:
            out += self.sessionizer.on_tick(state, user, session.ts + TIMEOUT_MS + 1).transitions
            self.replay.add([Transition.model_validate(t, strict=False)
                             for t in out if t["kind"] == "organic"])  # fmt: skip
            self.slates.add([SlateTransition.model_validate(t, strict=False)
                             for t in out if t["kind"] == "slate"])  # fmt: skip
        return session.outcome.reward

    def train(self) -> None:
        with_slates = learns_from_slates(self.settings)
        for _ in range(self.updates):
            batch = self.replay.sample(self.settings.batch_size)
            slates = None
            if with_slates and len(self.slates) >= SLATE_WARMUP:
                slates = self.slates.sample(self.settings.slate_batch_size)
            stats = self.dqn.update(batch, slates)
            self.replay.update_priorities(batch, stats.td_error)
            self.control.update(batch)
        self.dqn.set_impressions(self.slates.impressions())

    # --- diagnostics ------------------------------------------------------------------
    def diagnostics(self, sample: int = 120) -> dict[str, dict[str, float]]:
        """Per arm, over shoppers with history: Spearman correlation of the arm's scores
        with the shopper's true utility, the share of its top-10 in the shopper's most
        visited category, and the share of the catalog in anybody's top-10."""
        users = [s for s in self.population if self.sessions.get(s.user_id)
                 and self.sessions[s.user_id].history][:sample]  # fmt: skip
        out: dict[str, dict[str, float]] = {}
        now = max(self.clock.values(), default=0)
        for arm in ("learned", "coview", "supervised", "popularity"):
            corr, share, seen = [], [], set()
            for s in users:
                score = None if arm == "popularity" else self.scores(arm, s.user_id, now)
                score = self.popularity if score is None else score
                truth = utility(self.shop, s)
                corr.append(_spearman(score, truth))
                top = np.argsort(-score, kind="stable")[:K]
                seen.update(int(i) for i in top)
                cats = Counter(int(self.shop.category[h[0]])
                               for h in self.sessions[s.user_id].history)  # fmt: skip
                share.append(float(np.mean(self.shop.category[top] == cats.most_common(1)[0][0])))
            out[arm] = {"rank_correlation": round(float(np.mean(corr)), 3),
                        "history_category_share": round(float(np.mean(share)), 3),
                        "catalog_coverage": round(len(seen) / len(self.shop), 3)}  # fmt: skip
        return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def run(variant: str, shop: str, seed: int, args: argparse.Namespace,
        progress: Progress) -> dict[str, object]:  # fmt: skip
    overrides = dict(item.split("=", 1) for item in args.set)
    loop = Loop(variant, shop, seed, args.updates, args.population, args.epsilon, overrides)
    log: list[tuple[int, str, str, float]] = []  # (round, arm, user, reward)
    task = progress.add_task(f"{variant}, {shop}, seed {seed}", total=args.rounds)
    started = time.monotonic()
    for r in range(args.rounds):
        for i in loop.rng.permutation(len(loop.population)):
            shopper = loop.population[i]
            log.append((r, loop.arm[shopper.user_id], shopper.user_id, loop.session(shopper)))
        loop.train()
        progress.advance(task)
        if not sys.stderr.isatty():  # progress in logs too, not only on a terminal
            done = time.monotonic() - started
            print(f"# {variant}/{shop}/seed {seed}: round {r + 1}/{args.rounds}, "
                  f"{done:.0f} s, eta {done / (r + 1) * (args.rounds - r - 1):.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    progress.remove_task(task)
    return {"log": log, "picks": loop.picks, "diagnostics": loop.diagnostics(),
            "updates": loop.dqn.updates, "seconds": time.monotonic() - started,
            "prior_weight": float(loop.dqn.online.prior_weight.detach())}  # fmt: skip


def summarize(runs: list[dict[str, object]], rounds: int) -> dict[str, object]:
    """Intervals over the second half (and the learned arm by thirds) of one or more runs
    (shoppers of different seeds are different shoppers: pooled)."""
    log = [row for run_ in runs for row in run_["log"]]  # type: ignore[attr-defined]
    half = rounds // 2

    def arm(name: str, lo: int = half, hi: int = rounds) -> ArmRewards:
        return ArmRewards.of((u, x) for r, a, u, x in log if a == name and lo <= r < hi)

    late = {name: arm(name) for name in ARMS}
    arms = {name: reward_interval(late[name]).as_dict() for name in ARMS}
    ratios = {f"learned/{name}": ratio_interval(late["learned"], late[name]).as_dict()
              for name in ARMS if name != "learned"}  # fmt: skip
    third = rounds // 3
    thirds = [round(arm("learned", i * third, (i + 1) * third).mean(), 4) for i in range(3)]
    halves = [round(arm("learned", 0, half).mean(), 4), round(late["learned"].mean(), 4)]
    picks = [run_["picks"] for run_ in runs]
    greedy = sum(p.reward["greedy"] for p in picks) / max(1, sum(p.shown["greedy"] for p in picks))  # type: ignore[attr-defined]
    explore = sum(p.reward["explore"] for p in picks) / max(
        1, sum(p.shown["explore"] for p in picks)
    )  # type: ignore[attr-defined]
    by_round = [round(ArmRewards.of((u, x) for r, a, u, x in log if a == name and r == i).mean(), 3)
                for name in ("learned",) for i in range(rounds)]  # fmt: skip
    return {"arms": arms, "ratios": ratios, "learned_thirds": thirds, "learned_halves": halves,
            "greedy_per_impression": round(greedy, 4), "explore_per_impression": round(explore, 4),
            "learned_by_round": by_round,
            "shoppers_per_arm": {name: len(late[name]) for name in ARMS}}  # fmt: skip


def plot(results: dict[str, dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        arms = results[key]["arms"]  # type: ignore[index]
        names = list(arms)
        values = [arms[n]["value"] for n in names]
        errors = [[arms[n]["value"] - arms[n]["low"] for n in names],
                  [arms[n]["high"] - arms[n]["value"] for n in names]]  # fmt: skip
        ax.bar(names, values, yerr=errors, capsize=3,
               color=["C3" if n == "learned" else "C0" for n in names])  # fmt: skip
        ax.set_title(key, fontsize=9)
        ax.set_ylabel("reward / session, second half (95% CI)")
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="response")
    parser.add_argument("--shops", default="default,misleading")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--updates", type=int, default=100, help="updates per round")
    parser.add_argument("--population", type=int, default=960, help="returning shoppers")
    parser.add_argument("--epsilon", type=float, default=0.1, help="the learned arm's epsilon")
    parser.add_argument("--out", type=Path, default=Path("reports/slate_loop"))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="a learner setting on top of the variant's (field name)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, object]] = {}
    with Progress(transient=True) as progress:
        for variant in args.variants.split(","):
            for shop in args.shops.split(","):
                runs = []
                for seed in [int(s) for s in args.seeds.split(",")]:
                    done = run(variant, shop, seed, args, progress)
                    runs.append(done)
                    summary = summarize([done], args.rounds)
                    _emit(variant, shop, str(seed), summary, done)
                    results[f"{variant}/{shop}/seed{seed}"] = {**summary,
                        "diagnostics": done["diagnostics"],
                        # (round, arm, shopper, reward) of every session: lets runs made
                        # separately be pooled later (``summarize``).
                        "sessions": done["log"]}  # fmt: skip
                pooled = summarize(runs, args.rounds)
                _emit(variant, shop, "pooled", pooled, None)
                results[f"{variant}/{shop}"] = pooled
    (out / "metrics.json").write_bytes(orjson.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "torch_threads": 1,
         "results": results}, option=orjson.OPT_INDENT_2))  # fmt: skip
    plot({k: v for k, v in results.items() if "seed" not in k}, out / "arms.png")
    print(f"# wrote {out}/metrics.json and arms.png", file=sys.stderr)


def _emit(variant: str, shop: str, seeds: str, summary: dict[str, object],
          run_: dict[str, object] | None) -> None:  # fmt: skip
    arms = summary["arms"]  # type: ignore[index]
    ratios = summary["ratios"]  # type: ignore[index]
    extra = (
        {}
        if run_ is None
        else {
            "diagnostics": run_["diagnostics"],
            "updates": run_["updates"],
            "seconds": round(float(run_["seconds"]), 1),  # type: ignore[arg-type]
            "prior_weight": round(float(run_["prior_weight"]), 3),
        }
    )  # type: ignore[arg-type]
    figure("slate_loop", "learned_reward_per_session", arms["learned"]["value"], "reward/session",
           baseline="oracle", baseline_value=arms["oracle"]["value"], variant=variant, shop=shop,
           seeds=seeds, arms=arms, ratios=ratios, learned_thirds=summary["learned_thirds"],
           learned_halves=summary["learned_halves"],
           greedy_per_impression=summary["greedy_per_impression"],
           explore_per_impression=summary["explore_per_impression"],
           shoppers_per_arm=summary["shoppers_per_arm"], torch_threads=1, **extra)  # fmt: skip


if __name__ == "__main__":
    main()
