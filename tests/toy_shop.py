"""A toy shop whose truth is known, and snapshots that rank it in a chosen order
(shared by the gate and guard tests).

20 items, items 0-4 liked (clicked with probability 0.6 when examined, the rest 0.05);
a cascade of 3 slots examined with probability 1, 0.8, 0.6 until the first click.
Snapshots are exported by the learner's own code; their item biases dominate their
scores, so they rank a known order whatever the state (and pass every structural check
serving makes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from learner.export import SnapshotExporter, TopKPolicy, check_parity, io_spec
from learner.qnet import QNetwork
from schemas.exploration import Policy
from schemas.manifest import GateResult
from schemas.model_store import ModelStore, WrittenSnapshot
from schemas.records import InteractionSequence, SlateTransition
from schemas.reward import Reward

N, SLOTS, L = 20, 3, 4
LIKED = np.arange(N) < 5
CLICK = np.where(LIKED, 0.6, 0.05)
EXAMINE = np.array([1.0, 0.8, 0.6])
SERVING = Policy("epsilon", epsilon=0.1)
GOOD = np.argsort(-CLICK, kind="stable")  # liked items first
BAD = GOOD[::-1].copy()
ITEM_IDS = [f"sku-{i}" for i in range(N)]


def ranking_model(order: np.ndarray) -> tuple[bytes, TopKPolicy]:
    """An exported snapshot that ranks items in ``order`` whatever the state."""
    torch.manual_seed(0)
    net = QNetwork(n_items=N, dim=4, history_length=L, capacity=N)
    bias = np.zeros(N, np.float32)
    bias[order] = np.linspace(10.0, 0.0, N)
    with torch.no_grad():
        net.item.mul_(0.001)  # the user term is noise next to the biases
        net.item_bias.copy_(torch.from_numpy(bias))
    return SnapshotExporter(k=N).export(net, N)


def write_ranking(root: Path, order: np.ndarray, decision: str = "promoted") -> WrittenSnapshot:
    """Write a snapshot ranking ``order`` into the model store."""
    model, policy = ranking_model(order)
    return ModelStore(root).write(
        model=model, item_ids=ITEM_IDS, step=1, k=N, history_length=L, encoder="gru",
        reward=Reward(), io_spec=io_spec(L, N), parity=check_parity(model, policy),
        metrics={}, gate=GateResult(decision=decision),  # type: ignore[arg-type]
    )  # fmt: skip


def cascade(rng: np.random.Generator, slate: np.ndarray | list[int]) -> list[float]:
    """Per-slot clicks of one shown slate (the first examined, liked item)."""
    rewards = [0.0] * len(slate)
    for j, item in enumerate(slate):
        if rng.random() < EXAMINE[j] and rng.random() < CLICK[item]:
            rewards[j] = 1.0
            break
    return rewards


def log_slates(n: int, seed: int) -> list[SlateTransition]:
    """Slates logged in the shop: most by a uniform random baseline (propensity
    1/(20 - j)), every tenth by serving's epsilon-0.1 popularity fallback."""
    rng = np.random.default_rng(seed)
    popularity = rng.permutation(N).astype(float)  # the fallback's (arbitrary) ranking
    out = []
    for i in range(n):
        if i % 10 == 0:
            choice = SERVING.choose(popularity, SLOTS, rng)
            slate, props, name, version = (np.array(choice.positions), choice.propensities,
                                           SERVING.name, "popularity")  # fmt: skip
        else:
            slate = rng.choice(N, SLOTS, replace=False)
            props, name, version = [1 / (N - j) for j in range(SLOTS)], "random", "baseline"
        rewards = cascade(rng, slate)
        clicked = any(rewards)
        state = InteractionSequence(items=[int(rng.integers(N))], events=[1], ages=[1])
        out.append(SlateTransition(
            user_id=f"u{i}", seq=0, rec_id=f"r{i}", policy=name, model_version=version,
            state=state, items=slate.tolist(), propensities=props, shown=[True] * SLOTS,
            responses=[int(r > 0) for r in rewards], rewards=rewards,
            next_state=state if clicked else None, done=False, closed_by="reward_wait",
            ts_ms=1_700_000_000_000 + i,
        ))  # fmt: skip
    return out


def on_policy_value(order: np.ndarray, draws: int, seed: int, slots: int = SLOTS) -> float:
    """The truth: the ranking served with serving's exploration, run in the shop; the
    reward of its first ``slots`` slots per slate."""
    rng = np.random.default_rng(seed)
    scores = np.zeros(N)
    scores[order] = np.linspace(10.0, 0.0, N)
    return float(np.mean([sum(cascade(rng, SERVING.choose(scores, SLOTS, rng).positions)[:slots])
                          for _ in range(draws)]))  # fmt: skip
