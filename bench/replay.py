"""Replay store throughput: recq's store (tensor ring + vectorized sum tree) against
TorchRL's TensorDict replay buffers (LazyTensorStorage), on the same n-step samples, in
the same run: extend blocks of 500 samples; sample batches of 256 (and, prioritized,
write back new priorities). Uniform always; prioritized when TorchRL's compiled sum tree
loads (TorchRL 0.14.1's extension is built against another torch and does not load with
torch 2.13; the bench then says so in a JSON line). Prints JSON lines (bench/report.py). Needs the
optional extra: `.venv/bin/pip install -e '.[bench]'`, then

    .venv/bin/python bench/replay.py [--capacity 200000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.learner import synthetic_samples
from bench.report import figure
from learner.replay.buffer import ReplayBuffer
from learner.replay.storage import Samples

BATCH, BLOCK, ITEMS, HISTORY = 256, 500, 50_000, 10


def per_second(step: Callable[[], None], seconds: float) -> float:
    for _ in range(5):
        step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += 1
    return done / (time.perf_counter() - start)


Steps = tuple[Callable[[], None], Callable[[], None]]


def ours(capacity: int, blocks: list[Samples], prioritized: bool) -> Steps:
    replay = ReplayBuffer.build(capacity=capacity, history_length=HISTORY,
                                device=torch.device("cpu"), prioritized=prioritized,
                                n_step=3, gamma=0.9)  # fmt: skip
    cursor = iter(range(10**12))

    def extend() -> None:
        block = blocks[next(cursor) % len(blocks)]
        with replay._lock:
            replay.sampler.on_write(replay.storage.extend(block))

    for _ in range(capacity // BLOCK):
        extend()

    def sample() -> None:
        batch = replay.sample(BATCH, beta=0.5)
        replay.update_priorities(batch, torch.rand(BATCH))

    return extend, sample


def torchrl(capacity: int, blocks: list[Samples], prioritized: bool) -> Steps:
    from tensordict import TensorDict
    from torchrl.data import (
        LazyTensorStorage,
        TensorDictPrioritizedReplayBuffer,
        TensorDictReplayBuffer,
    )

    buffer = (
        TensorDictPrioritizedReplayBuffer(
            alpha=0.6, beta=0.5, storage=LazyTensorStorage(capacity), batch_size=BATCH,
            priority_key="td_error",
        )
        if prioritized
        else TensorDictReplayBuffer(storage=LazyTensorStorage(capacity), batch_size=BATCH)
    )  # fmt: skip
    dicts = [
        TensorDict(
            {
                name: torch.from_numpy(np.ascontiguousarray(getattr(b, name)))
                for name in b.__dataclass_fields__
            },
            batch_size=[len(b)],
        )
        for b in blocks
    ]
    cursor = iter(range(10**12))

    def extend() -> None:
        buffer.extend(dicts[next(cursor) % len(dicts)])

    for _ in range(capacity // BLOCK):
        extend()

    def sample() -> None:
        batch = buffer.sample()
        if prioritized:
            batch.set("td_error", torch.rand(BATCH))
            buffer.update_tensordict_priority(batch)  # type: ignore[attr-defined]

    return extend, sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    try:
        import torchrl as _  # noqa: F401
    except ImportError:
        sys.exit("bench/replay.py compares against TorchRL: pip install -e '.[bench]' first")
    blocks = [synthetic_samples(BLOCK, ITEMS, seed=s) for s in range(8)]
    for prioritized in (False, True):
        kind = "prioritized" if prioritized else "uniform"
        try:
            theirs = torchrl(args.capacity, blocks, prioritized)
        except RuntimeError as exc:  # the compiled segment tree did not load
            figure("replay", f"{kind}_torchrl_available", 0, "bool", reason=str(exc))
            continue
        mine = ours(args.capacity, blocks, prioritized)
        for metric, index in (("sample_per_s", 1), ("extend_blocks_per_s", 0)):
            value = per_second(mine[index], args.seconds)
            baseline = per_second(theirs[index], args.seconds)
            figure("replay", f"{kind}_{metric}", value, "1/s", baseline="torchrl",
                   baseline_value=baseline, digits=1, capacity=args.capacity, batch=BATCH,
                   block=BLOCK)  # fmt: skip


if __name__ == "__main__":
    main()
