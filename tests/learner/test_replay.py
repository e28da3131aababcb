"""Replay semantics: ring capacity, proportional prioritized sampling (a statistical
test), importance weights, n-step returns across episode ends and sequence gaps."""

from __future__ import annotations

import math

import pytest
import torch

from learner.replay.buffer import ReplayBuffer
from learner.replay.sampler import PrioritizedSampler, SumTree
from learner.replay.storage import TensorStorage
from learner.replay.writer import NStepWriter
from tests.learner.helpers import L, samples, transition

CPU = torch.device("cpu")


def test_storage_wraps_at_capacity_keeping_the_newest() -> None:
    storage = TensorStorage(5, L, CPU)
    storage.extend(samples([0, 1, 2]))
    slots = storage.extend(samples([3, 4, 5, 6]))
    assert len(storage) == 5
    assert slots.tolist() == [3, 4, 0, 1]  # the oldest (0, 1) were overwritten first
    held = storage.gather(torch.arange(5), torch.ones(5)).action.tolist()
    assert held == [5, 6, 2, 3, 4]
    storage.extend(samples(list(range(10, 22))))  # a block larger than capacity
    assert sorted(storage.gather(torch.arange(5), torch.ones(5)).action.tolist()) == [
        17, 18, 19, 20, 21,
    ]  # fmt: skip
    assert storage.max_item == 21


def test_sum_tree_finds_prefix_intervals() -> None:
    tree = SumTree(5, CPU)
    tree.set(torch.arange(5), torch.tensor([1.0, 0.0, 2.0, 3.0, 4.0]))
    assert tree.total == 10.0
    mass = torch.tensor([0.5, 1.0001, 2.9, 3.1, 5.9, 6.1, 9.99], dtype=torch.float64)
    assert tree.find(mass).tolist() == [0, 2, 2, 3, 3, 4, 4]


def test_prioritized_sampling_is_proportional_to_priority() -> None:
    torch.manual_seed(7)
    sampler = PrioritizedSampler(8, CPU, alpha=1.0, eps=0.0)
    priorities = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.5, 6.0, 0.0, 1.5])
    sampler.on_write(torch.arange(8))
    sampler.update(torch.arange(8), priorities)
    counts = torch.zeros(8)
    draws = 0
    for _ in range(200):
        slots, _ = sampler.sample(256, 8, beta=0.4)
        counts += torch.bincount(slots, minlength=8)
        draws += 256
    expected = priorities / priorities.sum() * draws
    assert counts[6] == 0  # zero priority is never drawn
    live = expected > 0
    chi2 = float((((counts - expected) ** 2)[live] / expected[live]).sum())
    # 6 degrees of freedom; P(chi2 > 22.46) = 0.001 under proportional sampling.
    assert chi2 < 22.46, (counts.tolist(), expected.tolist())


def test_alpha_flattens_priorities_and_weights_follow_the_formula() -> None:
    torch.manual_seed(3)
    alpha, beta = 0.5, 0.7
    sampler = PrioritizedSampler(4, CPU, alpha=alpha, eps=0.0)
    sampler.on_write(torch.arange(4))
    sampler.update(torch.arange(4), torch.tensor([1.0, 4.0, 9.0, 16.0]))
    slots, weights = sampler.sample(64, 4, beta=beta)
    p = torch.tensor([1.0, 2.0, 3.0, 4.0])  # priority ** alpha
    prob = p / p.sum()
    raw = (4 * prob[slots]) ** -beta
    assert torch.allclose(weights, raw / raw.max(), atol=1e-6)
    assert math.isclose(float(weights.max()), 1.0)


def test_new_samples_get_the_max_priority_so_far() -> None:
    sampler = PrioritizedSampler(4, CPU, alpha=1.0, eps=0.0)
    sampler.on_write(torch.arange(2))
    sampler.update(torch.tensor([0, 1]), torch.tensor([5.0, 0.1]))
    sampler.on_write(torch.tensor([2]))
    assert sampler.tree.get(torch.tensor([2])).item() == pytest.approx(5.0)


def test_priority_updates_skip_slots_overwritten_since_sampling() -> None:
    replay = ReplayBuffer.build(capacity=2, history_length=L, device=CPU, prioritized=True,
                                n_step=1, gamma=0.9, alpha=1.0)  # fmt: skip
    replay.add([transition("u", 0, 1, 0.0), transition("u", 1, 2, 0.0, done=True)])
    batch = replay.sample(2)
    replay.add([transition("v", 0, 3, 0.0, done=True)])  # overwrites the oldest slot
    replay.update_priorities(batch, torch.full((2,), 100.0))
    assert isinstance(replay.sampler, PrioritizedSampler)
    leaves = replay.sampler.tree.get(torch.arange(2)).tolist()
    overwritten = int(replay.storage.stamp.argmax())
    assert leaves[overwritten] == pytest.approx(1.0)  # the new sample's max priority...
    assert leaves[1 - overwritten] == pytest.approx(100.0 + 1e-3)  # ...untouched by the update


def drain(writer: NStepWriter) -> list[tuple[int, float, float, list[int]]]:
    s = writer.drain()
    return [
        (int(s.action[i]), float(s.ret[i]), float(s.discount[i]), s.next_items[i].tolist())
        for i in range(len(s))
    ]


def test_n_step_returns_truncate_at_done_and_bootstrap_otherwise() -> None:
    g = 0.5
    w = NStepWriter(n=3, gamma=g, history_length=L)
    rewards = [1.0, 2.0, 4.0]
    for i, r in enumerate(rewards):
        w.add(transition("u", i, 10 + i, r, done=i == 2, state=tuple(range(10, 10 + i))))
    out = drain(w)
    assert [(a, ret, d) for a, ret, d, _ in out] == [
        (10, 1 + g * 2 + g * g * 4, 0.0),  # done inside the 3 steps: no bootstrap
        (11, 2 + g * 4, 0.0),
        (12, 4.0, 0.0),
    ]
    # A new session (seq continues): the n-th step emits the first with gamma^n.
    for i, r in zip(range(3, 7), [1.0, 1.0, 1.0, 8.0], strict=True):
        w.add(transition("u", i, 20 + i, r, state=(20 + i - 1,)))
    out = drain(w)
    assert [(a, ret, d) for a, ret, d, _ in out] == [
        (23, 1 + g + g * g, g**3),
        (24, 1 + g + g * g * 8, g**3),
    ]
    assert out[0][3] == [0, 0, 24, 25]  # bootstrapped from the 3rd step's next state
    assert w.pending_users == 1


def test_a_gap_in_seq_flushes_shorter_bootstrapped_samples() -> None:
    g = 0.9
    w = NStepWriter(n=3, gamma=g, history_length=L)
    w.add(transition("u", 0, 1, 1.0))
    w.add(transition("u", 1, 2, 1.0))
    w.add(transition("u", 7, 3, 1.0))  # seq jumped: the first two cannot chain into it
    out = drain(w)
    assert [(a, round(ret, 6), round(d, 6)) for a, ret, d, _ in out] == [
        (1, round(1 + g, 6), round(g**2, 6)),
        (2, 1.0, round(g, 6)),
    ]
    w.flush()
    assert [(a, d) for a, _, d, _ in drain(w)] == [(3, pytest.approx(g))]


def test_users_do_not_mix() -> None:
    w = NStepWriter(n=2, gamma=0.5, history_length=L)
    w.add(transition("a", 0, 1, 1.0))
    w.add(transition("b", 0, 5, 3.0))
    w.add(transition("a", 1, 2, 2.0))
    w.add(transition("b", 1, 6, 4.0, done=True))
    out = drain(w)
    assert [(a, ret, d) for a, ret, d, _ in out] == [
        (1, 1 + 0.5 * 2, 0.25),
        (5, 3 + 0.5 * 4, 0.0),
        (6, 4.0, 0.0),
    ]


def test_states_are_left_padded_to_the_history_length() -> None:
    w = NStepWriter(n=1, gamma=0.9, history_length=L)
    w.add(transition("u", 0, 7, 1.0, state=(3, 4, 5, 6, 8, 9)))  # longer than L: newest kept
    w.add(transition("u", 1, 2, 1.0, state=(1,)))
    s = w.drain()
    assert s.items.tolist() == [[5, 6, 8, 9], [0, 0, 0, 1]]
    assert s.events.tolist() == [[1, 1, 1, 1], [0, 0, 0, 1]]
