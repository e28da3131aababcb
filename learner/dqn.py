"""One double-DQN update, computed where the math needs the catalog and nowhere else.

    y   = ret + discount * Q_target(s', argmax_a Q_online(s', a))      (n-step, double DQN)
    L   = mean_i w_i * huber(y_i - Q_online(s_i, a_i))  [+ CE of the next-item head]

Q at the taken action is a gather; one no-grad pass over the catalog (in blocks) finds
the online argmax at s'; the target network is evaluated at that argmax only. The
supervised head uses a sampled softmax (uniform negatives shared by the batch) unless
``negatives == 0``. ``full_catalog_step`` is the straightforward version (three full
scorings, full softmax) kept as the benchmark baseline and as the reference in tests.
"""

from __future__ import annotations

import copy
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from learner.qnet import QNetwork
from learner.replay.storage import Batch


@dataclass(frozen=True)
class DQNConfig:
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    target_tau: float = 0.01
    grad_clip: float = 10.0
    huber_delta: float = 1.0
    supervised_weight: float = 1.0
    negatives: int = 1024  # 0: full softmax
    select_dtype: torch.dtype = torch.float32  # bfloat16 where AMX / tensor cores exist
    mixed_precision: bool = False  # bf16 autocast (CUDA)


@dataclass(frozen=True)
class UpdateStats:
    td_error: torch.Tensor  # [B], detached
    loss_td: float
    loss_ce: float
    q_mean: float
    grad_norm: float


class DQN:
    """Online and target networks, the optimizer, and the update."""

    def __init__(self, online: QNetwork, config: DQNConfig) -> None:
        self.online = online
        self.target = copy.deepcopy(online).requires_grad_(False)
        self.config = config
        self.optimizer = torch.optim.AdamW(
            online.parameters(),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            fused=True,  # one kernel over all tensors: ~6x faster than foreach on CPU
        )
        self.updates = 0

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
        follow_growth(self.optimizer, grown)
        return bool(grown)

    # --- update ---------------------------------------------------------------------------
    def _autocast(self) -> AbstractContextManager[object]:
        if self.config.mixed_precision and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        online, target = self.online, self.target
        _, user_next, _ = online.encode(batch.next_items, batch.next_events, batch.next_ages)
        best = online.best_items(user_next.float(), self.config.select_dtype)
        _, user_t, value_t = target.encode(batch.next_items, batch.next_events, batch.next_ages)
        q_next = target.q_at(user_t.float(), value_t.float(), best)
        return batch.ret + batch.discount * q_next

    def update(self, batch: Batch) -> UpdateStats:
        cfg, net = self.config, self.online
        with self._autocast():
            y = self.td_target(batch)
            hidden, user, value = net.encode(batch.items, batch.events, batch.ages)
            q = net.q_at(user.float(), value.float(), batch.action)
            loss_ce = self._supervised_loss(hidden, batch.action) if net.supervised else None
        td = y - q
        loss_td = (
            batch.weight * F.huber_loss(q, y, reduction="none", delta=cfg.huber_delta)
        ).mean()
        loss = loss_td if loss_ce is None else loss_td + cfg.supervised_weight * loss_ce
        return self._step(loss, td, loss_td, loss_ce, q)

    def _supervised_loss(self, hidden: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        net, k = self.online, self.config.negatives
        if k == 0 or k >= net.n_items:
            return F.cross_entropy(net.supervised_logits(hidden, None).float(), action)
        # Sampled softmax with uniform negatives: the log-Q correction is a constant and
        # cancels; a negative that is the row's own positive is masked out.
        negatives = torch.randint(net.n_items, (k,), device=action.device)
        pos = net.supervised_logits(hidden, action.unsqueeze(1)).float()
        neg = net.supervised_logits(hidden, negatives).float()
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
    ) -> UpdateStats:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        grad_norm = nn.utils.clip_grad_norm_(self.online.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.soft_update()
        self.updates += 1
        return UpdateStats(
            td_error=td.detach(),
            loss_td=float(loss_td.detach()),
            loss_ce=float(loss_ce.detach()) if loss_ce is not None else 0.0,
            q_mean=float(q.detach().mean()),
            grad_norm=float(grad_norm),
        )

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
        y = batch.ret + batch.discount * target.q_all(ut, vt).gather(1, best[:, None])[:, 0]
    hidden, user, value = net.encode(batch.items, batch.events, batch.ages)
    q = net.q_all(user, value).gather(1, batch.action[:, None])[:, 0]
    loss_td = (batch.weight * F.huber_loss(q, y, reduction="none", delta=cfg.huber_delta)).mean()
    loss_ce = (
        F.cross_entropy(net.supervised_logits(hidden, None), batch.action)
        if net.supervised
        else None
    )
    loss = loss_td if loss_ce is None else loss_td + cfg.supervised_weight * loss_ce
    return dqn._step(loss, y - q, loss_td, loss_ce, q)


def follow_growth(
    optimizer: torch.optim.Optimizer, grown: dict[str, tuple[nn.Parameter, nn.Parameter]]
) -> None:
    """Point the optimizer at reallocated parameters, zero-padding their moment estimates."""
    for old, new in grown.values():
        for group in optimizer.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]
        state = optimizer.state.pop(old, None)
        if state:
            pad = new.shape[0] - old.shape[0]
            optimizer.state[new] = {
                key: torch.cat([v, v.new_zeros((pad, *v.shape[1:]))])
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == old.shape[0]
                else v
                for key, v in state.items()
            }


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
