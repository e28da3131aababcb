"""One double-DQN update, computed where the math needs the catalog and nowhere else.

    y   = w * ret + discount * Q_target(s', argmax_a Q_online(s', a))  (n-step, double DQN;
          w = RECQ_ORGANIC_REWARD: the share of organic reward the recommender earned)
    L   = mean_i w_i * huber(y_i - Q_online(s_i, a_i))  [+ CE of the next-item head]

Q at the taken action is a gather; one no-grad pass over the catalog (in blocks) finds
the online argmax at s'; the target network is evaluated at that argmax only. The
supervised head uses a sampled softmax (uniform negatives shared by the batch) unless
``negatives == 0``. ``full_catalog_step`` is the straightforward version (three full
scorings, full softmax) kept as the benchmark baseline and as the reference in tests.

The response model (``RECQ_RANKING=response``; ``learner.qnet``) adds the binary
cross-entropy of every examined slot's reward share (``response_loss``). Slates
(``RECQ_SLATE_LEARNING``, docs/learner.md, "Learning from slates") add, in the same step:

    td:      answered slot j:  Q(s, a_j) -> r_j + gamma * Q_target(s', argmax Q(s', .))
             ignored slot k:   Q(s, a_k) -> 0  (shown, not taken: DRN's negative feedback)
    slateq:  choice loss       -log P(answered slots | s, A), or -log P(no click | s, A)
             answered slot j:  Q(s, a_j) -> r_j + gamma * sum_{i in A*} P(i|s',A*) Q_target(s',i)
             A* = the top-k of exp(v(s', a)) * Q(s', a) (the slate the learned policy shows)

The slateq target bootstraps from the slate the learned policy would show (SlateQ's
Q-learning form), not from the logged next slate (its SARSA form), because the logged
slates come from several policies (exploration, the popularity fallback, baselines):
the SARSA target would evaluate their mixture. With that choice no term needs an
importance weight: the choice model is conditioned on the slate shown (a logging policy
changes which slates are seen, not P(j | s, A)), and each TD term conditions on the
action taken. The logged propensities are kept on every slate transition for
off-policy evaluation of snapshots.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from learner.optim import RowAdamW
from learner.qnet import ItemRows, QNetwork
from learner.replay.slates import SlateBatch
from learner.replay.storage import Batch
from schemas.reward import Reward
from schemas.settings import LearnerSettings

#: Fixed parts of the objective (not settings: nothing measured asked to change them).
HUBER_DELTA = 1.0
SUPERVISED_WEIGHT = 1.0
#: Weight of the negative-action term: sampled actions the logged shopper did not take,
#: whose Q is regressed to zero (negative sampling for Q-learning, SNQN: Xin et al.
#: 2022). Off-policy data only ever shows taken actions; without this, Q of every other
#: item is unconstrained and the double-DQN argmax chases the most over-estimated one.
NEGATIVE_WEIGHT = 1.0
#: Weight of the slate terms (TD on answered slots, zero target on ignored ones, choice).
SLATE_WEIGHT = 1.0
#: Updates between full refreshes of the argmax's selection table (see ``_step``).
SELECTION_REFRESH = 100
#: Weight of the response model's loss (``RECQ_RANKING=response``).
RESPONSE_WEIGHT = 1.0
#: Slate size of the SlateQ target's A*: what serving shows by default.
TARGET_SLATE_SIZE = 10


@dataclass(frozen=True)
class UpdateStats:
    td_error: torch.Tensor  # [B], detached
    loss_td: float
    loss_ce: float
    q_mean: float
    grad_norm: float
    loss_slate: float = 0.0
    loss_choice: float = 0.0
    loss_response: float = 0.0


class DQN:
    """Online and target networks, the optimizer, and the update."""

    def __init__(
        self,
        online: QNetwork,
        config: LearnerSettings,
        *,
        select_dtype: torch.dtype = torch.float32,
        mixed_precision: bool = False,
    ) -> None:
        """``config``: the learner's settings (learning rate, weight decay, target tau,
        gradient clip, negatives). ``select_dtype``: bfloat16 where AMX / tensor cores
        exist (``select_dtype_for``); ``mixed_precision``: bf16 autocast on CUDA."""
        self.online = online
        self.target = copy.deepcopy(online).requires_grad_(False)
        self.config = config
        self.select_dtype = select_dtype
        self.mixed_precision = mixed_precision
        per_item = set(online.per_item_parameters())
        self.optimizer = torch.optim.AdamW(
            [p for name, p in online.named_parameters() if name not in per_item],
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            fused=True,  # one kernel over all tensors: ~6x faster than foreach on CPU
        )
        self.row_optimizer = RowAdamW(
            {name: getattr(online, name) for name in per_item},
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        self.updates = 0
        self.slot_ceiling = Reward.from_settings(config).slot_ceiling()
        # The online catalog in the selection dtype, kept current row by row as the row
        # optimizer writes (re-casting all of it on every update costs more than the
        # bf16 products save).
        self._selection = online.selection_table(select_dtype)

    @property
    def device(self) -> torch.device:
        return self.online.item.device

    # --- catalog growth -------------------------------------------------------------------
    def ensure_items(self, n_items: int) -> bool:
        """Grow both networks (and the optimizer state) to ``n_items``; True if reallocated."""
        grown = self.online.ensure_items(n_items)
        target_grown = self.target.ensure_items(n_items)
        for name, (_, new) in target_grown.items():
            new.requires_grad_(False)
            # New rows start equal to the online network's, as a fresh copy would.
            rows = slice(grown[name][0].shape[0], new.shape[0])
            new.data[rows] = getattr(self.online, name).data[rows]
        for name, (_, new) in grown.items():
            self.row_optimizer.follow(name, new)
        if grown:
            self._selection = self.online.selection_table(self.select_dtype)
        return bool(grown)

    @torch.no_grad()
    def set_impressions(self, counts: torch.Tensor) -> None:
        """Impressions per item (the slate store's count) for the response ranking's
        shrinkage; items past ``counts`` have none."""
        for net in (self.online, self.target):
            n = min(net.capacity, counts.shape[0])
            net.impressions.zero_()
            net.impressions[:n] = counts[:n].to(net.impressions)

    @torch.no_grad()
    def set_features(
        self, index: torch.Tensor, category: torch.Tensor, log_price: torch.Tensor
    ) -> None:
        """Catalog features of items ``index`` in both networks (``QNetwork.set_features``)."""
        for net in (self.online, self.target):
            net.set_features(index, category, log_price)
        self.refresh_selection()

    def refresh_selection(self) -> None:
        """Re-derive the selection table (after weights were loaded from elsewhere)."""
        self._selection = self.online.selection_table(self.select_dtype)

    # --- update ---------------------------------------------------------------------------
    def _autocast(self) -> AbstractContextManager[object]:
        if self.mixed_precision and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        q_next = self.double_q_next(batch.next_items, batch.next_events, batch.next_ages)
        # Replay holds organic transitions: their reward counts as the recommender's only
        # by the configured share (RECQ_ORGANIC_REWARD).
        return self.config.organic_reward * batch.ret + batch.discount * q_next

    @torch.no_grad()
    def double_q_next(
        self, items: torch.Tensor, events: torch.Tensor, ages: torch.Tensor
    ) -> torch.Tensor:
        """Q_target(s', argmax_a Q_online(s', a)) at next states s' (double DQN)."""
        online, target = self.online, self.target
        _, user_next, _ = online.encode(items, events, ages)
        best = online.best_items(user_next.float(), self.select_dtype, self._selection)
        _, user_t, value_t = target.encode(items, events, ages)
        return target.q_at(user_t.float(), value_t.float(), best)

    def update(self, batch: Batch, slates: SlateBatch | None = None) -> UpdateStats:
        cfg, net = self.config, self.online
        sampled = net.supervised and 0 < cfg.supervised_negatives < net.n_items
        count = max(cfg.supervised_negatives if sampled else 0, cfg.negative_actions)
        negatives = torch.randint(net.n_items, (count,), device=self.device)
        slate_terms: tuple[torch.Tensor, torch.Tensor] | None = None
        loss_response: torch.Tensor | None = None
        with self._autocast():
            y = self.td_target(batch)
            extra = () if slates is None else (slates.items, slates.slate)
            rows = net.rows(batch.items, batch.action, negatives, *extra)
            if slates is not None:
                encoded = net.encode(slates.items, slates.events, slates.ages, rows)
                if cfg.slate_learning != "off":
                    slate_terms = self._slate_losses(slates, rows, encoded)
                if cfg.ranking == "response":
                    loss_response = response_loss(net, encoded[0], slates, rows,
                                                  self.slot_ceiling)  # fmt: skip
            hidden, user, value = net.encode(batch.items, batch.events, batch.ages, rows)
            q = net.q_at(user.float(), value.float(), batch.action, rows)
            loss_ce = (
                self._supervised_loss(hidden, batch.action, negatives if sampled else None, rows)
                if net.supervised
                else None
            )
            loss_neg = (
                self._negative_loss(user.float(), value.float(), batch.action, negatives, rows)
                if cfg.negative_actions
                else None
            )
        td = y - q
        loss_td = (batch.weight * F.huber_loss(q, y, reduction="none", delta=HUBER_DELTA)).mean()
        loss = loss_td
        if loss_ce is not None:
            loss = loss + SUPERVISED_WEIGHT * loss_ce
        if loss_neg is not None:
            loss = loss + NEGATIVE_WEIGHT * loss_neg
        if slate_terms is not None:
            loss = loss + SLATE_WEIGHT * (slate_terms[0] + slate_terms[1])
        if loss_response is not None:
            loss = loss + RESPONSE_WEIGHT * loss_response
        stats = self._step(loss, td, loss_td, loss_ce, q, rows)
        return dataclasses.replace(
            stats,
            loss_slate=float(slate_terms[0].detach()) if slate_terms is not None else 0.0,
            loss_choice=float(slate_terms[1].detach()) if slate_terms is not None else 0.0,
            loss_response=float(loss_response.detach()) if loss_response is not None else 0.0,
        )

    # --- slates ---------------------------------------------------------------------------
    def _slate_losses(
        self, slates: SlateBatch, rows: ItemRows,
        encoded: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """(slate TD loss, choice loss) of a batch of slates (see the module docstring);
        ``encoded``: (hidden, user, value) of the slates' states."""
        net, mode = self.online, self.config.slate_learning
        hidden, user, value = encoded
        q = net.q_slots(user.float(), value.float(), slates.slate, rows)  # [B, S]
        answered = (slates.responses > 0) & slates.shown
        ignored = slates.shown & ~answered
        if mode == "slateq":
            next_value = self.slate_next_value(slates)
        else:
            next_value = self.double_q_next(slates.next_items, slates.next_events, slates.next_ages)
        bootstrap = self.config.gamma * slates.bootstrap * next_value
        y = slates.rewards + bootstrap.unsqueeze(1)
        huber = F.huber_loss(q, y, reduction="none", delta=HUBER_DELTA)
        terms = huber * answered
        count = answered.sum()
        if mode == "td":
            zero = F.huber_loss(q, torch.zeros_like(q), reduction="none", delta=HUBER_DELTA)
            terms = terms + zero * ignored
            count = count + ignored.sum()
        loss_td = terms.sum() / count.clamp(min=1)
        if mode != "slateq":
            return loss_td, torch.zeros((), device=self.device)
        return loss_td, choice_loss(net, hidden, slates, rows)

    @torch.no_grad()
    def slate_next_value(self, slates: SlateBatch) -> torch.Tensor:
        """sum_{i in A*} P(i | s', A*) Q_target(s', i), A* the SlateQ top-k at s' chosen by
        the online network and valued by the target network (double-Q style)."""
        online, target = self.online, self.target
        hidden, user, value = online.encode(slates.next_items, slates.next_events, slates.next_ages)
        chosen = slateq_top_k(online, hidden, user, value, TARGET_SLATE_SIZE)
        h_t, u_t, v_t = target.encode(slates.next_items, slates.next_events, slates.next_ages)
        shown = torch.ones_like(chosen, dtype=torch.bool)
        probs = torch.softmax(target.choice_logits(h_t, chosen, shown).float(), 1)[:, 1:]
        return (probs * target.q_slots(u_t.float(), v_t.float(), chosen, None)).sum(1)

    def _negative_loss(
        self,
        user: torch.Tensor,
        value: torch.Tensor,
        action: torch.Tensor,
        negatives: torch.Tensor,
        rows: ItemRows,
    ) -> torch.Tensor:
        negatives = negatives[: self.config.negative_actions]
        q = self.online.q_many(user, value, negatives, rows)  # [B, K]
        untaken = (negatives.unsqueeze(0) != action.unsqueeze(1)).to(q.dtype)
        loss = F.huber_loss(q, torch.zeros_like(q), reduction="none", delta=HUBER_DELTA)
        return (loss * untaken).sum() / untaken.sum().clamp(min=1.0)

    def _supervised_loss(
        self,
        hidden: torch.Tensor,
        action: torch.Tensor,
        negatives: torch.Tensor | None,
        rows: ItemRows,
    ) -> torch.Tensor:
        net = self.online
        if negatives is None:
            # Full softmax over the catalog: dense gradients for every row (the rows
            # gathered for this batch get theirs through ``rows`` as well).
            return F.cross_entropy(net.supervised_logits(hidden, None).float(), action)
        # Sampled softmax with uniform negatives: the log-Q correction is a constant and
        # cancels; a negative that is the row's own positive is masked out.
        negatives = negatives[: self.config.supervised_negatives]
        pos = net.supervised_logits(hidden, action.unsqueeze(1), rows).float()
        neg = net.supervised_logits(hidden, negatives, rows).float()
        neg = neg.masked_fill(negatives.unsqueeze(0) == action.unsqueeze(1), -math.inf)
        logits = torch.cat([pos, neg], 1)
        return F.cross_entropy(logits, torch.zeros_like(action))

    def _step(
        self,
        loss: torch.Tensor,
        td: torch.Tensor,
        loss_td: torch.Tensor,
        loss_ce: torch.Tensor | None,
        q: torch.Tensor,
        rows: ItemRows | None,
    ) -> UpdateStats:
        """Backward, clip (dense and row gradients together), step both optimizers."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        index, row_grads = self._row_gradients(rows)
        dense = [p for group in self.optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in dense if p.grad is not None] + list(row_grads.values())
        grad_norm = torch.nn.utils.get_total_norm(grads)
        scale = (self.config.grad_clip / (grad_norm + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, scale)
        self.optimizer.step()
        self.row_optimizer.step(index, row_grads)
        self._selection[index] = self.online.selection_table(self.select_dtype, index)
        if self.updates % SELECTION_REFRESH == 0:
            # The shared feature parameters (category embeddings, price vector) move every
            # item's vector a little: the rows the update did not touch catch up here.
            self.refresh_selection()
        self.soft_update()
        self.updates += 1
        return UpdateStats(
            td_error=td.detach(),
            loss_td=float(loss_td.detach()),
            loss_ce=float(loss_ce.detach()) if loss_ce is not None else 0.0,
            q_mean=float(q.detach().mean()),
            grad_norm=float(grad_norm),
        )

    def _row_gradients(self, rows: ItemRows | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The per-item gradients as (rows, {table: [U, ...]}). Normally they come from the
        gathered ``rows``; a full-catalog term (full softmax, the baseline step) leaves
        dense gradients on the tables, which are then merged and reduced to the rows
        that received any gradient."""
        net = self.online
        tables = {name: getattr(net, name) for name in net.per_item_parameters()}
        if rows is not None and all(t.grad is None for t in tables.values()):
            return rows.index, {n: t.grad for n, t in rows.leaves().items() if t.grad is not None}
        if rows is not None:
            for name, leaf in rows.leaves().items():
                if leaf.grad is not None:
                    table = tables[name]
                    if table.grad is None:
                        table.grad = torch.zeros_like(table)
                    table.grad.index_add_(0, rows.index, leaf.grad)
        touched = torch.zeros(net.capacity, dtype=torch.bool, device=self.device)
        for table in tables.values():
            if table.grad is not None:
                grad = table.grad
                touched |= (grad.abs().sum(1) if grad.dim() == 2 else grad.abs()) > 0
        index = touched.nonzero().squeeze(1)
        grads = {n: t.grad[index] for n, t in tables.items() if t.grad is not None}
        for table in tables.values():
            table.grad = None
        return index, grads

    @torch.no_grad()
    def soft_update(self) -> None:
        online = [p.data for p in self.online.parameters()]
        target = [p.data for p in self.target.parameters()]
        torch._foreach_lerp_(target, online, self.config.target_tau)


def full_catalog_step(dqn: DQN, batch: Batch) -> UpdateStats:
    """The straightforward update: Q over the whole catalog for s (with grad), for s'
    online (argmax) and for s' target (gather), and a full softmax for the supervised
    head. Same objective as ``DQN.update``; the benchmark's baseline."""
    net, target, cfg = dqn.online, dqn.target, dqn.config
    with torch.no_grad():
        _, u2, v2 = net.encode(batch.next_items, batch.next_events, batch.next_ages)
        best = net.q_all(u2, v2).argmax(1)
        _, ut, vt = target.encode(batch.next_items, batch.next_events, batch.next_ages)
        q_next = target.q_all(ut, vt).gather(1, best[:, None])[:, 0]
        y = cfg.organic_reward * batch.ret + batch.discount * q_next
    hidden, user, value = net.encode(batch.items, batch.events, batch.ages)
    q_all = net.q_all(user, value)
    q = q_all.gather(1, batch.action[:, None])[:, 0]
    loss_td = (batch.weight * F.huber_loss(q, y, reduction="none", delta=HUBER_DELTA)).mean()
    loss_ce = (
        F.cross_entropy(net.supervised_logits(hidden, None), batch.action)
        if net.supervised
        else None
    )
    loss = loss_td if loss_ce is None else loss_td + SUPERVISED_WEIGHT * loss_ce
    if cfg.negative_actions:
        negatives = torch.randint(net.n_items, (cfg.negative_actions,), device=dqn.device)
        q_neg = q_all.index_select(1, negatives)
        untaken = (negatives.unsqueeze(0) != batch.action.unsqueeze(1)).to(q.dtype)
        huber = F.huber_loss(q_neg, torch.zeros_like(q_neg), reduction="none",
                             delta=HUBER_DELTA)  # fmt: skip
        loss = loss + NEGATIVE_WEIGHT * (huber * untaken).sum() / untaken.sum().clamp(min=1.0)
    return dqn._step(loss, y - q, loss_td, loss_ce, q, None)


def slateq_top_k(
    net: QNetwork, hidden: torch.Tensor, user: torch.Tensor, value: torch.Tensor, k: int
) -> torch.Tensor:
    """The SlateQ top-k rule: the k items with the largest exp(v(s, a)) * Q(s, a)."""
    score = slateq_score(net.appeal_all(hidden), net.q_all(user, value))
    return torch.topk(score, min(k, score.shape[1]), dim=1).indices


def slateq_score(appeal: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """exp(v) * Q, the item's share of the slate value before normalisation; v is clamped
    so the exponential stays finite in float32 (and in the exported graph)."""
    return torch.exp(appeal.clamp(-30.0, 30.0)) * q


def choice_loss(
    net: QNetwork, hidden: torch.Tensor, slates: SlateBatch, rows: ItemRows | None
) -> torch.Tensor:
    """Negative log-likelihood of the conditional logit: the answered slots of each slate
    (their mean when several were), or no click."""
    logits = net.choice_logits(hidden, slates.slate, slates.shown, rows).float()
    log_p = torch.log_softmax(logits, 1)
    answered = ((slates.responses > 0) & slates.shown).float()
    picked = torch.cat([(answered.sum(1, keepdim=True) == 0).float(), answered], 1)
    per_row = -(log_p.masked_fill(picked == 0, 0.0) * picked).sum(1) / picked.sum(1)
    return per_row.mean()


def response_loss(
    net: QNetwork, hidden: torch.Tensor, slates: SlateBatch, rows: ItemRows | None,
    ceiling: float,
) -> torch.Tensor:  # fmt: skip
    """Binary cross-entropy of each examined slot's reward, as a share of ``ceiling`` (the
    most a slot can earn), against sigmoid(z): a fitted sigmoid(z) is the slot's expected
    reward share. Every shown slot counts, answered or not, down to the first answered
    one: below it the shopper had stopped looking (the cascade assumption of click
    models), so those slots say nothing about the items in them."""
    logits = net.response_logits(hidden, slates.slate, rows).float()
    answered = (slates.responses > 0) & slates.shown
    width = slates.slate.shape[1]
    first = torch.where(answered.any(1), answered.float().argmax(1), width)
    examined = slates.shown & (torch.arange(width, device=first.device)[None, :] <= first[:, None])
    target = (slates.rewards / ceiling).clamp(0.0, 1.0)
    terms = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (terms * examined).sum() / examined.sum().clamp(min=1)


def select_dtype_for(device: torch.device) -> torch.dtype:
    """bfloat16 for the argmax where the hardware multiplies it natively, else float32."""
    if device.type == "cuda":
        return torch.bfloat16
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return torch.float32
    return torch.bfloat16 if ("amx_bf16" in flags or "avx512_bf16" in flags) else torch.float32
