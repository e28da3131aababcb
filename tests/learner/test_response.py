"""The response ranking (RECQ_RANKING=response): learned from every examined slot, the
organic prior overruled item by item, shrunk where impressions are few, exported as
trained."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from learner.dqn import DQN, response_loss
from learner.export import SnapshotExporter, check_parity, ranking_scores, sample_states
from learner.qnet import QNetwork
from learner.replay.slates import SlateStore
from schemas.manifest import OUTPUT_NAMES
from schemas.reward import Reward
from schemas.settings import LearnerSettings, SettingsError, load_settings

from .helpers import L
from .test_slateq import slate


def net(n_items: int = 12, *, supervised: bool = True, seed: int = 0) -> QNetwork:
    torch.manual_seed(seed)
    return QNetwork(n_items=n_items, dim=8, history_length=L, supervised_head=supervised)


def test_the_slot_ceiling_is_a_click_a_cart_and_a_purchase() -> None:
    assert Reward().slot_ceiling() == pytest.approx(0.2 + 0.5 + 1.0)
    assert Reward(click=1.0, cart=-1.0, purchase=0.0).slot_ceiling() == 1.0


def test_the_loss_counts_slots_down_to_the_first_answer_with_reward_shares() -> None:
    # Logits are 0 everywhere (no prior, zero correction query, bias, level and positions), so
    # each counted slot costs BCE(0, y) = log 2 (the sigmoid's entropy does not depend on
    # y at logit 0: -y log .5 - (1 - y) log .5).
    q = net(supervised=False)
    with torch.no_grad():
        for layer in (q.response_level, q.response_query):
            layer.weight.zero_()
            layer.bias.zero_()
    store = SlateStore(4, L, torch.device("cpu"))
    # Slot 1 answered (click + cart = 0.7); slot 2 below it: not examined, not counted.
    store.add([slate([3, 4, 5], [0, 2, 0], [0.0, 0.7, 0.0], state=(1,))])
    batch = store.sample(1, torch.Generator().manual_seed(0))
    hidden, _, _ = q.encode(batch.items, batch.events, batch.ages)
    loss = response_loss(q, hidden, batch, None, ceiling=1.7)
    assert float(loss.detach()) == pytest.approx(math.log(2), rel=1e-5)
    # The gradient says which slots counted and which way: the ignored item's bias is
    # pushed down by 0.5 / 2 slots, the answered one's up by (0.7 / 1.7 - 0.5) / 2, and
    # the item below the answer gets nothing.
    loss.backward()
    grad = q.response_bias.grad
    assert grad is not None
    assert grad[3].item() == pytest.approx(0.5 / 2, rel=1e-5)
    assert grad[4].item() == pytest.approx((0.5 - 0.7 / 1.7) / 2, rel=1e-5)
    assert grad[5].item() == 0.0


def test_an_items_own_evidence_counts_by_n_over_n_plus_n0() -> None:
    q = net(supervised=True)
    items, events, ages = sample_states(2, L, 12, seed=3)
    with torch.no_grad():
        q.response_query.weight.zero_()  # W_r h = 0: only the items' own biases correct
        q.response_query.bias.zero_()
        hidden, _, _ = q.encode(items, events, ages)
        prior = q.prior_weight * q.supervised_logits(hidden, None)
        q.response_bias[5] = 2.0
        q.response_bias[6] = 2.0  # never shown: its evidence counts with weight 0
        assert torch.allclose(q.response_scores(hidden), prior)
        q.impressions[5] = 20.0  # n = n0 = 20: half the correction counts
        scores = q.response_scores(hidden)
    assert torch.allclose(scores[:, 5], prior[:, 5] + 1.0, atol=1e-6)
    others = [i for i in range(12) if i != 5]
    assert torch.allclose(scores[:, others], prior[:, others])


def test_slate_answers_overrule_the_organic_prior() -> None:
    # Organic data says item 2 (its next-item bias is far above item 7's); every slate
    # that showed both says 7: 2 was ignored, 7 clicked and carted.
    settings = LearnerSettings(negative_actions=0, supervised_negatives=0, learning_rate=0.02)
    q = net(supervised=True)
    with torch.no_grad():
        q.next_item_bias[2] = 4.0
    dqn = DQN(q, settings)
    store = SlateStore(256, L, torch.device("cpu"))
    store.add([slate([2, 7], [0, 2], [0.0, 0.7], state=(1,)) for _ in range(40)])
    dqn.set_impressions(store.impressions())
    assert q.impressions[2].item() == 40 and q.impressions[7].item() == 40
    items, events, ages = sample_states(1, L, 12, seed=0)
    items[:], events[:] = 0, 0
    items[0, -1], events[0, -1] = 1, 1
    with torch.no_grad():
        before = ranking_scores(q, "response", items, events, ages)[0]
    assert before[2] > before[7]
    prior_before = q.next_item_bias.detach().clone()
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        batch = store.sample(32, generator)
        hidden, _, _ = q.encode(batch.items, batch.events, batch.ages)
        loss = response_loss(q, hidden, batch, None, ceiling=1.7)
        dqn.optimizer.zero_grad()
        q.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in (q.response_item, q.response_bias):
                p -= 0.05 * p.grad  # plain SGD on the correction rows
        dqn.optimizer.step()
    with torch.no_grad():
        after = ranking_scores(q, "response", items, events, ages)[0]
    assert after[7] > after[2]
    # The organic prior itself is untouched by the slates: they reweigh, not rewrite it.
    assert torch.equal(q.next_item_bias.detach(), prior_before)


def test_a_response_snapshot_ranks_in_onnx_as_in_torch() -> None:
    q = net(40, supervised=True, seed=4)
    with torch.no_grad():
        q.response_item.normal_(0.0, 1.0)
        q.response_bias.normal_(0.0, 1.0)
        q.impressions[:40] = torch.arange(40.0)
    model, policy = SnapshotExporter(10, "response").export(q, 36)
    parity = check_parity(model, policy)
    assert parity.topk_equal == 1.0 and parity.max_abs_diff < 1e-4
    items, events, ages = sample_states(8, L, 36, seed=9)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    indices, scores = session.run(
        list(OUTPUT_NAMES), {"items": items.numpy(), "events": events.numpy(),
                             "ages": ages.numpy(), "exclude": np.full((8, 1), -1)},
    )  # fmt: skip
    q.n_items = 36  # the snapshot's active catalog
    with torch.no_grad():
        reference = torch.topk(ranking_scores(q, "response", items, events, ages), 10)
    assert (indices == reference.indices.numpy()).all()
    assert np.allclose(scores, reference.values.numpy(), atol=1e-4)


def test_a_next_item_snapshot_ranks_by_the_supervised_head_in_onnx_as_in_torch() -> None:
    q = net(30, supervised=True, seed=5)
    with torch.no_grad():
        q.next_item_bias.normal_(0.0, 1.0)
    model, policy = SnapshotExporter(8, "next_item").export(q, 27)
    parity = check_parity(model, policy)
    assert parity.topk_equal == 1.0 and parity.max_abs_diff < 1e-4
    items, events, ages = sample_states(4, L, 27, seed=2)
    with torch.no_grad():
        indices, _ = policy(items, events, ages, torch.full((4, 1), -1))
        q.n_items = 27
        hidden, _, _ = q.encode(items, events, ages)
        reference = torch.topk(q.supervised_logits(hidden, None), 8).indices
    assert torch.equal(indices, reference)


def test_slateq_ranking_without_the_choice_model_fails_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECQ_RANKING", "slateq")
    monkeypatch.setenv("RECQ_SLATE_LEARNING", "td")
    with pytest.raises(SettingsError, match="RECQ_RANKING"):
        load_settings(LearnerSettings)


def test_the_q_prior_is_exported_as_trained() -> None:
    # RECQ_RESPONSE_PRIOR=next_item+q: the prior adds beta * (u . e_a + b_a).
    torch.manual_seed(2)
    q = QNetwork(n_items=30, dim=8, history_length=L, supervised_head=True, q_prior=True)
    with torch.no_grad():
        q.item_bias.normal_(0.0, 1.0)
        q.q_prior_weight.fill_(0.7)
        q.response_query.weight.zero_()  # no correction: the scores are the priors
        q.response_query.bias.zero_()
    items, events, ages = sample_states(4, L, 30, seed=1)
    with torch.no_grad():
        hidden, user, _ = q.encode(items, events, ages)
        expected = q.prior_weight * q.supervised_logits(hidden, None) + 0.7 * (
            user @ q.item[:30].T + q.item_bias[:30]
        )
        assert torch.allclose(q.response_scores(hidden), expected, atol=1e-5)
    model, policy = SnapshotExporter(10, "response").export(q)
    parity = check_parity(model, policy)
    assert parity.topk_equal == 1.0 and parity.max_abs_diff < 1e-4


def test_next_item_ranking_without_the_head_fails_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECQ_RANKING", "next_item")
    with pytest.raises(SettingsError, match="RECQ_SUPERVISED_HEAD"):
        load_settings(LearnerSettings)
