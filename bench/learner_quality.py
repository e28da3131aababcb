"""Which Q-network to ship: GRU vs a small causal transformer encoder, with and without
the supervised next-item head (SQN), trained for the same number of updates on the same
synthetic shop log and scored on held-out sessions by HR@10 / NDCG@10 of the next item
under the Q ranking (all targets, and purchase targets). Prints one JSON line per
variant; the defaults in schemas/settings.py follow the best. Run after `make test`:

    .venv/bin/python bench/learner_quality.py [--updates 1500] [--items 2000]

The log: items in categories, each item with three "complements" in its category;
shoppers with a hidden favourite category follow complements (60 %), browse their
category (30 %) or wander (10 %); they cart and buy mostly in their category.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from learner.dqn import DQN
from learner.qnet import QNetwork
from learner.replay.buffer import ReplayBuffer
from schemas.features import EVENT_CODES
from schemas.records import InteractionSequence, Transition
from schemas.reward import Reward
from schemas.settings import LearnerSettings

HISTORY = 10
REWARD = Reward()  # the default weights (schemas.reward)
CLICK, CART, PURCHASE = (EVENT_CODES[k] for k in ("click", "cart", "purchase"))


def sessions(n: int, items: int, seed: int) -> list[list[tuple[int, int]]]:
    """(item, event code) per step of ``n`` sessions."""
    rng = np.random.default_rng(seed)
    categories = 20
    category = np.arange(items) % categories
    members = [np.flatnonzero(category == c) for c in range(categories)]
    complements = np.stack([rng.choice(members[category[i]], 3) for i in range(items)])
    out = []
    for _ in range(n):
        taste = rng.integers(categories)
        item = int(rng.choice(members[taste]) if rng.random() < 0.7 else rng.integers(items))
        steps = []
        for _ in range(rng.integers(5, 16)):
            liked = category[item] == taste
            code = CLICK
            if rng.random() < (0.35 if liked else 0.05):
                code = PURCHASE if rng.random() < 0.4 else CART
            steps.append((item, code))
            u = rng.random()
            if u < 0.6:
                item = int(rng.choice(complements[item]))
            elif u < 0.9:
                item = int(rng.choice(members[taste]))
            else:
                item = int(rng.integers(items))
        out.append(steps)
    return out


def state(history: list[tuple[int, int]]) -> InteractionSequence:
    h = history[-HISTORY:]
    return InteractionSequence(items=[i for i, _ in h], events=[c for _, c in h],
                               ages=[1] * len(h))  # fmt: skip


def transitions(log: list[list[tuple[int, int]]]) -> list[Transition]:
    out = []
    for u, steps in enumerate(log):
        for t, (item, code) in enumerate(steps):
            out.append(Transition(
                user_id=f"u{u}", seq=t, kind="organic", state=state(steps[:t]), action=item,
                reward=REWARD.of(code), next_state=state(steps[: t + 1]),
                done=t == len(steps) - 1, ts_ms=1_700_000_000_000,
            ))  # fmt: skip
    return out


def evaluate(
    net: QNetwork, log: list[list[tuple[int, int]]], k: int = 10, head: str = "q"
) -> dict[str, float]:
    """HR@k / NDCG@k of the next item, ranking by the Q head or the supervised head."""
    hits = {"all": [], "purchase": []}  # type: dict[str, list[float]]
    ndcg = {"all": [], "purchase": []}  # type: dict[str, list[float]]
    rows = [(state(steps[:t]), item, code) for steps in log for t, (item, code) in
            enumerate(steps) if t > 0]  # fmt: skip
    for start in range(0, len(rows), 512):
        chunk = rows[start : start + 512]
        items = torch.zeros(len(chunk), HISTORY, dtype=torch.int64)
        events = torch.zeros_like(items)
        for r, (s, _, _) in enumerate(chunk):
            n = len(s.items)
            items[r, HISTORY - n :] = torch.tensor(s.items)
            events[r, HISTORY - n :] = torch.tensor(s.events)
        with torch.no_grad():
            hidden, user, _ = net.encode(items, events, (events > 0).long())
            scores = net.scores(user) if head == "q" else net.supervised_logits(hidden, None)
            top = scores.topk(k, dim=1).indices
        for r, (_, target, code) in enumerate(chunk):
            where = (top[r] == target).nonzero()
            hit = float(len(where) > 0)
            gain = 1.0 / math.log2(int(where[0]) + 2) if hit else 0.0
            for key in ("all", "purchase") if code == PURCHASE else ("all",):
                hits[key].append(hit)
                ndcg[key].append(gain)
    return {
        f"{head}_hr@{k}": round(float(np.mean(hits["all"])), 4),
        f"{head}_ndcg@{k}": round(float(np.mean(ndcg["all"])), 4),
        f"{head}_purchase_hr@{k}": round(float(np.mean(hits["purchase"])), 4),
        f"{head}_purchase_ndcg@{k}": round(float(np.mean(ndcg["purchase"])), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=6000)
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--variants", default="gru,gru+sqn,transformer,transformer+sqn,gru+sqn-neg")
    args = parser.parse_args()
    log = sessions(args.sessions, args.items, seed=1)
    held_out = sessions(1000, args.items, seed=2)  # same shop, new shoppers
    data = transitions(log)
    for name in args.variants.split(","):
        encoder, supervised, negatives = name.split("+")[0], "+sqn" in name, "-neg" not in name
        torch.manual_seed(0)
        replay = ReplayBuffer.build(capacity=len(data), history_length=HISTORY,
                                    device=torch.device("cpu"), prioritized=True,
                                    n_step=3, gamma=0.9)  # fmt: skip
        replay.add(data)
        net = QNetwork(n_items=args.items, history_length=HISTORY, encoder=encoder,
                       supervised_head=supervised)  # fmt: skip
        config = LearnerSettings(supervised_negatives=256, learning_rate=args.lr,
                                 negative_actions=256 if negatives else 0,
                                 organic_reward=1.0)  # fmt: skip
        dqn = DQN(net, config)
        start = time.perf_counter()
        for step in track(range(args.updates), description=name, transient=True):
            beta = 0.4 + 0.6 * step / args.updates
            batch = replay.sample(256, beta)
            replay.update_priorities(batch, dqn.update(batch).td_error)
        seconds = time.perf_counter() - start
        hr = evaluate(net, held_out)
        figure(
            "learner_quality", "q_hr@10", hr["q_hr@10"], "fraction", variant=name, **hr,
            **(evaluate(net, held_out, head="supervised") if supervised else {}),
            updates=args.updates, train_s=round(seconds, 1),
        )  # fmt: skip


if __name__ == "__main__":
    main()
