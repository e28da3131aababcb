"""The update on tiny hand-made MDPs, the double-DQN target against a hand computation,
the efficient step against the straightforward one, catalog growth and checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from learner import checkpoint
from learner.dqn import DQN, full_catalog_step
from learner.qnet import QNetwork
from learner.replay.buffer import ReplayBuffer
from learner.replay.storage import Batch
from schemas.settings import LearnerSettings
from tests.learner.helpers import L, transition

CPU = torch.device("cpu")


def make_dqn(n_items: int, *, supervised: bool = False, seed: int = 0, **config: float) -> DQN:
    torch.manual_seed(seed)
    net = QNetwork(n_items=n_items, dim=16, history_length=L, supervised_head=supervised)
    # These tests are about Q-learning on organic transitions: their reward counts in full
    # (RECQ_ORGANIC_REWARD=1) unless a test says otherwise.
    config = {"organic_reward": 1.0, **config}
    return DQN(net, LearnerSettings(**config))  # type: ignore[arg-type]


def state(*items: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seq = torch.zeros(1, L, dtype=torch.int64)
    ev = torch.zeros(1, L, dtype=torch.int64)
    if items:
        seq[0, L - len(items) :] = torch.tensor(items)
        ev[0, L - len(items) :] = 1
    return seq, ev, ev.clone()  # age bucket 1 wherever there is an interaction


def q_values(dqn: DQN, *items: int) -> list[float]:
    with torch.no_grad():
        _, u, v = dqn.online.encode(*state(*items))
        return dqn.online.q_all(u, v)[0].tolist()


def chain_log(repeats: int) -> list:  # type: ignore[type-arg]
    """Start state A (empty history), five items. At A: item 1 pays 0.5 and ends, item 2
    pays nothing but leads to B (history [2]), anything else pays 0 and ends. At B: item 3
    pays 1.0, anything else 0, and the episode ends. Q*(A, 2) = 0.9 > Q*(A, 1) = 0.5: only
    discounted bootstrapping finds item 2; the immediate reward favours item 1."""
    log, seq = [], 0
    for r in range(repeats):
        for a in range(5):
            user = f"u{r}-{a}"
            if a == 2:
                log.append(transition(user, seq, 2, 0.0, state=()))
                for b in range(5):
                    log.append(transition(f"{user}-{b}", seq + 1, b, 1.0 if b == 3 else 0.0,
                                          done=True, state=(2,)))  # fmt: skip
                # The chain's own continuation: item 3 at B, which ends the episode.
                log.append(transition(user, seq + 1, 3, 1.0, done=True, state=(2,)))
            else:
                log.append(transition(user, seq, a, 0.5 if a == 1 else 0.0, done=True))
            seq += 2
    return log


def test_q_learning_with_discounting_finds_the_delayed_reward() -> None:
    # Every (state, action) of this MDP is in the log: no negative sampling needed.
    dqn = make_dqn(5, learning_rate=1e-2, target_tau=0.05, weight_decay=0.0, negative_actions=0)
    replay = ReplayBuffer.build(capacity=4096, history_length=L, device=CPU,
                                prioritized=False, n_step=1, gamma=0.9)  # fmt: skip
    replay.add(chain_log(20))
    replay.flush()
    immediate = {1: 0.5, 2: 0.0}
    assert max(immediate, key=immediate.__getitem__) == 1  # the myopic choice
    for _ in range(1500):
        dqn.update(replay.sample(64))
    q_a, q_b = q_values(dqn), q_values(dqn, 2)
    assert max(range(5), key=q_b.__getitem__) == 3
    assert max(range(5), key=q_a.__getitem__) == 2
    assert q_a[2] == pytest.approx(0.9, abs=0.1)
    assert q_a[1] == pytest.approx(0.5, abs=0.1)
    assert q_b[3] == pytest.approx(1.0, abs=0.1)


def one_batch(next_items: tuple[int, ...], *, ret: float = 0.25, discount: float = 0.81) -> Batch:
    s, e, a = state(1)
    ns, ne, na = state(*next_items)
    return Batch(
        items=s, events=e, ages=a, action=torch.tensor([1]), ret=torch.tensor([ret]),
        next_items=ns, next_events=ne, next_ages=na, discount=torch.tensor([discount]),
        weight=torch.ones(1), index=torch.zeros(1, dtype=torch.int64),
        stamp=torch.zeros(1, dtype=torch.int64),
    )  # fmt: skip


def test_double_dqn_target_equals_a_hand_computation() -> None:
    dqn = make_dqn(7)
    # A target network that disagrees with the online one (as after some training).
    with torch.no_grad():
        for p in dqn.target.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    batch = one_batch((4, 2))
    # By hand: loop over every action with the one-action Q of each network.
    with torch.no_grad():
        _, u, v = dqn.online.encode(batch.next_items, batch.next_events, batch.next_ages)
        online = [float(dqn.online.q_at(u, v, torch.tensor([a]))) for a in range(7)]
        _, ut, vt = dqn.target.encode(batch.next_items, batch.next_events, batch.next_ages)
        target = [float(dqn.target.q_at(ut, vt, torch.tensor([a]))) for a in range(7)]
    best = max(range(7), key=online.__getitem__)
    expected = 0.25 + 0.81 * target[best]
    assert float(dqn.td_target(batch)) == pytest.approx(expected, abs=1e-5)
    if max(range(7), key=target.__getitem__) != best:  # and it is not vanilla DQN's max
        assert float(dqn.td_target(batch)) < 0.25 + 0.81 * max(target)
    # A terminal sample (discount 0) is its return alone.
    assert float(dqn.td_target(one_batch((4, 2), discount=0.0))) == pytest.approx(0.25)


def test_the_efficient_step_matches_the_full_catalog_step() -> None:
    replay = ReplayBuffer.build(capacity=512, history_length=L, device=CPU,
                                prioritized=True, n_step=2, gamma=0.9)  # fmt: skip
    replay.add([transition(f"u{i % 9}", i // 9, i % 40, (i % 3) / 2, state=(i % 40, (i + 7) % 40),
                           done=i % 11 == 0) for i in range(400)])  # fmt: skip
    replay.flush()
    fast = make_dqn(40, seed=5, negative_actions=0)  # sampled terms are random: compared off
    slow = copy.deepcopy(fast)
    for _ in range(3):
        batch = replay.sample(32, beta=0.5)
        a = fast.update(batch)
        b = full_catalog_step(slow, batch)
        assert a.loss_td == pytest.approx(b.loss_td, rel=1e-4)
        assert torch.allclose(a.td_error, b.td_error, atol=1e-5)
    for p, q in zip(fast.online.parameters(), slow.online.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_negative_sampling_pushes_untaken_actions_down() -> None:
    """One state, one logged action with reward 1. Without negatives the untaken items'
    Q is whatever initialization and sharing make it; with them it is pulled to zero and
    the logged action ranks first."""
    replay = ReplayBuffer.build(capacity=256, history_length=L, device=CPU,
                                prioritized=False, n_step=1, gamma=0.9)  # fmt: skip
    replay.add([transition(f"u{i}", 0, 3, 1.0, state=(1,), done=True) for i in range(64)])
    dqn = make_dqn(50, learning_rate=1e-2, negative_actions=32)
    for _ in range(300):
        dqn.update(replay.sample(32))
    q = q_values(dqn, 1)
    assert max(range(50), key=q.__getitem__) == 3
    assert q[3] == pytest.approx(1.0, abs=0.15)
    others = [v for a, v in enumerate(q) if a != 3]
    assert max(abs(v) for v in others) < 0.3


def test_the_catalog_grows_without_losing_learned_rows() -> None:
    dqn = make_dqn(10, supervised=True)
    replay = ReplayBuffer.build(capacity=256, history_length=L, device=CPU,
                                prioritized=False, n_step=1, gamma=0.9)  # fmt: skip
    replay.add([transition(f"u{i}", 0, i % 10, 1.0, done=True) for i in range(64)])
    dqn.update(replay.sample(16))
    before = dqn.online.item.detach()[:10].clone()
    moments = dqn.row_optimizer.exp_avg["item"][:10].clone()
    capacity = dqn.online.capacity
    assert dqn.ensure_items(capacity + 5)
    assert dqn.online.n_items == capacity + 5 and dqn.online.capacity > capacity
    assert torch.equal(dqn.online.item.detach()[:10], before)
    assert torch.equal(dqn.row_optimizer.exp_avg["item"][:10], moments)
    assert dqn.row_optimizer.tables["item"] is dqn.online.item
    replay.add([transition(f"v{i}", 0, capacity + 4, 1.0, done=True) for i in range(16)])
    row = dqn.online.item.detach()[capacity + 4].clone()
    stats = dqn.update(replay.sample(32))  # a new item can be trained on at once
    assert torch.isfinite(stats.td_error).all()
    assert not torch.equal(dqn.online.item.detach()[capacity + 4], row)


def test_restart_resumes_exactly_from_a_checkpoint(tmp_path: Path) -> None:
    replay = ReplayBuffer.build(capacity=256, history_length=L, device=CPU,
                                prioritized=False, n_step=1, gamma=0.9)  # fmt: skip
    replay.add([transition(f"u{i}", 0, i % 12, 1.0, state=(i % 5,), done=True)
                for i in range(128)])  # fmt: skip
    dqn = make_dqn(12, supervised=True, supervised_negatives=0, negative_actions=0)
    for _ in range(5):
        dqn.update(replay.sample(16))
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, dqn, {0: 41, 1: 7})

    fresh = make_dqn(12, supervised=True, seed=99, supervised_negatives=0, negative_actions=0)
    saved = checkpoint.restore(path, fresh)
    assert saved is not None and saved.offsets == {0: 41, 1: 7} and fresh.updates == 5
    batch = replay.sample(16)
    dqn.update(batch)
    fresh.update(batch)
    for p, q in zip(dqn.online.parameters(), fresh.online.parameters(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(dqn.target.parameters(), fresh.target.parameters(), strict=True):
        assert torch.equal(p, q)


def test_checkpoints_load_without_unpickling_code(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "evil": copy.deepcopy}, path)  # a function is not plain data
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        checkpoint.peek(path)


def test_organic_reward_zero_leaves_organic_clicks_out_of_the_targets() -> None:
    # RECQ_ORGANIC_REWARD=0: an organic transition with reward 1 and a terminal next
    # state has TD target 0 (it was not earned by a recommendation); at 0.5 it is 0.5.
    for share, expected in ((0.0, 0.0), (0.5, 0.5), (1.0, 1.0)):
        dqn = make_dqn(5, organic_reward=share)
        batch = ReplayBuffer.build(capacity=8, history_length=L, device=CPU, prioritized=False,
                                   n_step=1, gamma=0.9)  # fmt: skip
        batch.add([transition("u", 0, 2, 1.0, done=True)])
        sample = batch.sample(1)
        assert dqn.td_target(sample).item() == pytest.approx(expected)
