"""Learner update throughput: updates/s of the double-DQN step at a 50,000-item catalog
and batch 256, against the straightforward step that scores the full catalog three times
(plus a full softmax for the supervised head), in the same run on the same replay data;
and the cost of learning from slates (``RECQ_SLATE_LEARNING`` td / slateq, 128 slates of
10 slots per update) against the organic-only update.
Prints JSON lines (bench/report.py). Run from the repo root after `make test`:

    .venv/bin/python bench/learner.py [--items 50000] [--batch 256] [--seconds 8]

No broker needed: the replay store is filled with synthetic n-step samples.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from learner.device import pick_device
from learner.dqn import DQN, UpdateStats, full_catalog_step, select_dtype_for
from learner.qnet import QNetwork
from learner.replay.buffer import ReplayBuffer
from learner.replay.slates import SLATE_SLOTS, SlateStore
from learner.replay.storage import Batch, Samples
from schemas.settings import LearnerSettings

HISTORY = 10


def synthetic_samples(n: int, items: int, seed: int = 0) -> Samples:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, HISTORY + 1, n)
    pad = np.arange(HISTORY)[None, :] >= (HISTORY - lengths[:, None])

    def seq() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            rng.integers(0, items, (n, HISTORY)) * pad,
            (rng.integers(1, 4, (n, HISTORY)) * pad).astype(np.uint8),
            (rng.integers(1, 8, (n, HISTORY)) * pad).astype(np.uint8),
        )

    (i, e, a), (ni, ne, na) = seq(), seq()
    return Samples(
        items=i, events=e, ages=a, action=rng.integers(0, items, n),
        ret=rng.random(n, dtype=np.float32), next_items=ni, next_events=ne, next_ages=na,
        discount=np.where(rng.random(n) < 0.1, 0.0, 0.9**3).astype(np.float32),
    )  # fmt: skip


def synthetic_slates(n: int, items: int, device: torch.device) -> SlateStore:
    """A slate store filled directly: 10 shown slots, about a third answered once."""
    store = SlateStore(n, HISTORY, device)
    g = torch.Generator().manual_seed(1)
    t = store._t
    t["items"][:] = torch.randint(0, items, (n, HISTORY), generator=g).to(device)
    t["events"][:] = 1
    t["ages"][:] = 1
    t["next_items"][:] = torch.randint(0, items, (n, HISTORY), generator=g).to(device)
    t["next_events"][:] = 1
    t["next_ages"][:] = 1
    t["slate"][:] = torch.randint(0, items, (n, SLATE_SLOTS), generator=g).to(device)
    t["shown"][:, :10] = True
    answered = torch.rand(n, generator=g) < 0.35
    t["responses"][answered.to(device), 0] = 1
    t["rewards"][answered.to(device), 0] = 0.2
    t["bootstrap"][:] = 1.0
    store._size, store.written, store.max_item = n, n, items - 1
    return store


def rate(
    step: Callable[[Batch], UpdateStats], replay: ReplayBuffer, batch: int, seconds: float
) -> float:
    for _ in range(3):  # warm-up: allocator, oneDNN kernels
        step(replay.sample(batch))
    if replay.device.type == "cuda":
        torch.cuda.synchronize()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        b = replay.sample(batch)
        stats = step(b)
        replay.update_priorities(b, stats.td_error)
        done += 1
    if replay.device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--replay", type=int, default=100_000)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()

    device = pick_device(args.device)
    torch.manual_seed(0)
    replay = ReplayBuffer.build(capacity=args.replay, history_length=HISTORY, device=device,
                                prioritized=True, n_step=3, gamma=0.9)  # fmt: skip
    replay.storage.extend(synthetic_samples(args.replay, args.items))
    replay.sampler.on_write(torch.arange(args.replay, device=device))
    for supervised in (False, True):
        net = QNetwork(n_items=args.items, history_length=HISTORY, supervised_head=supervised)
        dqn = DQN(net.to(device), LearnerSettings(organic_reward=1.0),
                  select_dtype=select_dtype_for(device),
                  mixed_precision=device.type == "cuda")  # fmt: skip
        baseline = rate(partial(full_catalog_step, dqn), replay, args.batch, args.seconds)
        ours = rate(dqn.update, replay, args.batch, args.seconds)
        figure(
            "learner", "updates_per_s" + ("" if not supervised else "_sqn"), ours, "1/s",
            baseline="full_catalog_step", baseline_value=baseline, digits=1, items=args.items,
            batch=args.batch, device=device.type,
            select_dtype=str(dqn.select_dtype).removeprefix("torch."),
        )  # fmt: skip
    slates = synthetic_slates(20_000, args.items, device)
    # The slate terms of Q (td, slateq) and the response ranking (the default: response
    # loss on the slates beside td).
    for mode in ("td", "slateq", "response"):
        response = mode == "response"
        net = QNetwork(n_items=args.items, history_length=HISTORY, supervised_head=False)
        settings = LearnerSettings(
            slate_learning="td" if response else mode, ranking="response" if response else "q"
        )  # type: ignore[arg-type]
        dqn = DQN(net.to(device), settings, select_dtype=select_dtype_for(device),
                  mixed_precision=device.type == "cuda")  # fmt: skip
        organic = rate(dqn.update, replay, args.batch, args.seconds)

        def with_slate_batch(b: Batch, dqn: DQN = dqn) -> UpdateStats:
            return dqn.update(b, slates.sample(128))

        with_slates = rate(with_slate_batch, replay, args.batch, args.seconds)
        figure("learner", f"updates_per_s_slates_{mode}", with_slates, "1/s",
               baseline="organic_only", baseline_value=organic, digits=1, items=args.items,
               batch=args.batch, slate_batch=128, device=device.type)  # fmt: skip


if __name__ == "__main__":
    main()
