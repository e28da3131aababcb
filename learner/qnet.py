"""The Q-network for a large, growing catalog.

    h      = encoder(item_emb[s] + event_emb[s] + age_emb[s] + position)   (last position)
    u, V   = W_u h, w_v h                                                  (user vector, value)
    Q(s,a) = V + (u . e_a + b_a) - mean_a'(u . e_a' + b_a')                (dueling)

The advantage mean over the catalog is u . mean(e) + mean(b): O(d), not O(N), so Q at a
taken action stays a gather of one dot product. Ranking by Q equals ranking by
u . e_a + b_a, which is all the double-DQN argmax and the exported top-K need. Item
embeddings are shared by the input and the Q head (tied) and live in preallocated rows
that grow with the vocabulary (``ensure_items``) without restarting.

The optional supervised head (SQN, Xin et al. 2020) scores the next item as
W_s h . e_a + c_a on the same encoder and embeddings.

The choice model (SlateQ, Ie et al. 2019) is a conditional logit on the same encoder:
a shopper shown slate A picks slot j with probability

    P(j | s, A) = exp(v(s, a_j) + pos_j) / (exp(v0(s)) + sum_k exp(v(s, a_k) + pos_k))
    v(s, a) = W_c h . e_a + g_a        (item appeal to this shopper)
    v0(s)   = w_0 . h + b_0            (no click), pos_0 = 0 (position effect)

and the snapshot can rank by the SlateQ top-k rule, exp(v(s, a)) * Q(s, a).

The response model (``RECQ_RANKING=response``, the default) is what showing an item earns,
learned from every shown slot, answered or not:

    z(s, a, j) = alpha * prior(s, a) + W_r h . (e_a + f_a) + r_a + b(h) + pos_j    (trained)
    rank(s, a) = alpha * prior(s, a) + W_r h . (e_a + w_a f_a) + w_a r_a          (served)
    prior(s, a) = W_s h . e_a + c_a        (optional: the supervised head, organic next item)
    w_a = n_a / (n_a + n0)                 (n_a impressions of a; n0 prior impressions)

sigmoid(z) is the slot's expected reward as a share of the most a slot can earn. Organic
behaviour enters as context (the encoder), through the item vectors e_a (organic
learning plus item features, held fixed by this loss) and, where the supervised head is
on, a prior whose weight alpha the slates fit. W_r is shared by all items, so what the
slates teach it generalizes through e_a to similar items, a new one included; the
item's own evidence (f_a, r_a: zero until it is shown) counts with w_a (pessimism where
evidence is thin). b(h) and pos_j are the same for every item of a row and drop out of
the ranking (``response_scores``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from schemas.features import CATEGORY_BUCKETS, N_AGE_BUCKETS, N_EVENT_CODES

SELECT_CHUNK = 4096  # catalog rows per block of the argmax: keeps the block in cache
#: Slots with a position effect of their own; later slots share the last one.
POSITION_SLOTS = 20
#: Initial weight of the organic prior in the response model (learned from slates).
PRIOR_WEIGHT_INIT = 0.5


@dataclass(frozen=True)
class ItemRows:
    """The per-item parameters of the rows one batch touches, as leaf tensors.

    An update gathers each touched row once (``QNetwork.rows``); the forward pass reads
    them from here, so backward yields [U, d] row gradients instead of a dense
    [capacity, d] gradient that would be zero-filled, accumulated, clipped and stepped
    over the whole catalog on every update. ``RowAdamW`` applies them."""

    index: torch.Tensor  # [U] sorted unique item indices
    vector: torch.Tensor  # [U, d] the item vectors: id rows plus the item-feature part
    id_vector: torch.Tensor  # [U, d] the id rows (the leaf the row optimizer steps)
    bias: torch.Tensor  # [U]
    next_bias: torch.Tensor | None  # [U] (supervised head)
    choice_bias: torch.Tensor  # [U] (choice model: item appeal)
    response_item: torch.Tensor  # [U, d] (response model: correction vectors)
    response_bias: torch.Tensor  # [U] (response model: correction biases)

    def locate(self, items: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.index, items)

    def leaves(self) -> dict[str, torch.Tensor]:
        out = {
            "item": self.id_vector,
            "item_bias": self.bias,
            "choice_bias": self.choice_bias,
            "response_item": self.response_item,
            "response_bias": self.response_bias,
        }
        if self.next_bias is not None:
            out["next_item_bias"] = self.next_bias
        return out


class QNetwork(nn.Module):
    impressions: torch.Tensor
    item_category: torch.Tensor
    item_log_price: torch.Tensor

    def __init__(
        self,
        *,
        n_items: int,
        dim: int = 64,
        history_length: int = 10,
        encoder: Literal["gru", "transformer"] = "gru",
        supervised_head: bool = True,
        capacity: int | None = None,
        prior_impressions: float = 20.0,
        q_prior: bool = False,
        category_buckets: int = CATEGORY_BUCKETS,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.history_length = history_length
        self.encoder_kind = encoder
        self.n_items = max(1, n_items)
        capacity = max(self.n_items, capacity or _grown(self.n_items))
        self.item = nn.Parameter(torch.randn(capacity, dim) / math.sqrt(dim))
        self.item_bias = nn.Parameter(torch.zeros(capacity))
        self.event = nn.Embedding(N_EVENT_CODES, dim)
        self.age = nn.Embedding(N_AGE_BUCKETS, dim)
        self.position = nn.Parameter(torch.zeros(history_length, dim))
        self.encoder: nn.Module
        if encoder == "gru":
            self.encoder = nn.GRU(dim, dim, batch_first=True)
        else:
            layer = nn.TransformerEncoderLayer(
                dim, nhead=2, dim_feedforward=2 * dim, dropout=0.0, batch_first=True,
                norm_first=True,
            )  # fmt: skip
            self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
            self.register_buffer(
                "causal", nn.Transformer.generate_square_subsequent_mask(history_length),
                persistent=False,
            )  # fmt: skip
        self.user = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, 1)
        self.supervised = supervised_head
        if supervised_head:
            self.next_item = nn.Linear(dim, dim)
            self.next_item_bias = nn.Parameter(torch.zeros(capacity))
        # Choice model (trained only when the learner learns from slates).
        self.choice_query = nn.Linear(dim, dim)
        self.choice_bias = nn.Parameter(torch.zeros(capacity))
        self.no_click = nn.Linear(dim, 1)
        self.position_effect = nn.Parameter(torch.zeros(POSITION_SLOTS - 1))
        # Response model (trained only when the learner learns from slates). The
        # correction starts at zero: an item nobody was shown is ranked by the prior.
        self.prior_weight = nn.Parameter(torch.tensor(PRIOR_WEIGHT_INIT))
        self.response_query = nn.Linear(dim, dim)
        self.response_item = nn.Parameter(torch.zeros(capacity, dim))
        self.response_bias = nn.Parameter(torch.zeros(capacity))
        self.response_level = nn.Linear(dim, 1)
        self.response_position = nn.Parameter(torch.zeros(POSITION_SLOTS - 1))
        #: Impressions per item (shown slots the learner has read): the shrinkage weight.
        self.register_buffer("impressions", torch.zeros(capacity))
        self.prior_impressions = prior_impressions
        #: Q's advantage as a second prior (``RECQ_RESPONSE_PRIOR=next_item+q``).
        self.q_prior = q_prior
        self.q_prior_weight = nn.Parameter(torch.tensor(PRIOR_WEIGHT_INIT))
        # Item features (the catalog topic): e_a = id row + category embedding + log price
        # x price vector, so an item the catalog describes starts near its category and
        # price before anyone has interacted with it. Bucket 0 = no category known.
        self.category = nn.Embedding(category_buckets, dim, padding_idx=0)
        with torch.no_grad():
            self.category.weight.mul_(0.5)
            self.category.weight[0].zero_()
        self.price_vector = nn.Parameter(torch.zeros(dim))
        self.register_buffer("item_category", torch.zeros(capacity, dtype=torch.int64))
        self.register_buffer("item_log_price", torch.zeros(capacity))

    # --- catalog --------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return int(self.item.shape[0])

    def per_item_parameters(self) -> list[str]:
        return ["item", "item_bias", "choice_bias", "response_item", "response_bias",
                *(["next_item_bias"] if self.supervised else [])]  # fmt: skip

    def ensure_items(self, n_items: int) -> dict[str, tuple[nn.Parameter, nn.Parameter]]:
        """Make room for ``n_items``; returns {name: (old, new)} of reallocated parameters
        so the optimizer's state can follow (see ``dqn.follow_growth``)."""
        grown: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}
        if n_items > self.capacity:
            capacity = _grown(n_items)
            for name in self.per_item_parameters():
                old = getattr(self, name)
                fresh = (
                    torch.randn(capacity - old.shape[0], self.dim, device=old.device)
                    / math.sqrt(self.dim)
                    if old.dim() == 2 and name != "response_item"
                    else torch.zeros(capacity - old.shape[0], *old.shape[1:], device=old.device)
                )
                new = nn.Parameter(torch.cat([old.data, fresh.to(old.dtype)]))
                setattr(self, name, new)
                grown[name] = (old, new)
            for buffer in ("impressions", "item_category", "item_log_price"):
                old_buffer = getattr(self, buffer)
                pad = old_buffer.new_zeros(capacity - old_buffer.shape[0])
                setattr(self, buffer, torch.cat([old_buffer, pad]))
        self.n_items = max(self.n_items, n_items)
        return grown

    def rows(self, *indices: torch.Tensor) -> ItemRows:
        """Gather the rows of every item in ``indices`` once, as fresh leaves."""
        index = torch.unique(torch.cat([i.reshape(-1) for i in indices]))  # sorted

        def leaf(table: torch.Tensor) -> torch.Tensor:
            return table.detach()[index].requires_grad_()

        id_vector = leaf(self.item)
        return ItemRows(
            index=index,
            vector=id_vector + self.feature_vectors(index),
            id_vector=id_vector,
            bias=leaf(self.item_bias),
            next_bias=leaf(self.next_item_bias) if self.supervised else None,
            choice_bias=leaf(self.choice_bias),
            response_item=leaf(self.response_item),
            response_bias=leaf(self.response_bias),
        )

    # --- item features --------------------------------------------------------------------
    def set_features(
        self, index: torch.Tensor, category: torch.Tensor, log_price: torch.Tensor
    ) -> None:
        """Catalog features of items ``index``: category bucket and price feature
        (``schemas.features.category_bucket`` / ``price_feature``; 0 = unknown)."""
        with torch.no_grad():
            self.item_category[index] = category.to(self.item_category)
            self.item_log_price[index] = log_price.to(self.item_log_price)

    def feature_vectors(self, index: torch.Tensor) -> torch.Tensor:
        """The feature part of items ``index`` (any shape): [..., d]."""
        category: torch.Tensor = self.category(self.item_category[index])
        return category + self.item_log_price[index].unsqueeze(-1) * self.price_vector

    def item_vectors(self, index: torch.Tensor) -> torch.Tensor:
        """e_a of items ``index`` (any shape): id row plus feature part."""
        return self.item[index] + self.feature_vectors(index)

    def item_table(self, n: int | None = None) -> torch.Tensor:
        """e_a of the first ``n`` rows (default: the active catalog): [n, d]."""
        n = self.n_items if n is None else n
        return self.item[:n] + self.feature_vectors(torch.arange(n, device=self.item.device))

    # --- forward pieces -------------------------------------------------------------------
    def encode(
        self,
        items: torch.Tensor,
        events: torch.Tensor,
        ages: torch.Tensor,
        rows: ItemRows | None = None,
        table: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hidden state, user vector and state value of a batch of left-padded states.
        ``rows`` (the learner's gathered rows) or ``table`` (a prefix of the item table,
        for export) replace the full item table as the source of item vectors."""
        real = (events > 0).unsqueeze(-1).to(self.item.dtype)
        if rows is not None:
            vectors = rows.vector[rows.locate(items)]
        else:
            vectors = self.item_vectors(items) if table is None else F.embedding(items, table)
        x = (
            vectors * real  # padding rows carry no item
            + self.event(events)
            + self.age(ages.clamp(max=N_AGE_BUCKETS - 1))
            + self.position
        )
        if self.encoder_kind == "gru":
            out, _ = self.encoder(x)
        else:
            out = self.encoder(x, mask=self.causal, is_causal=True)
        h = out[:, -1]
        return h, self.user(h), self.value(h).squeeze(-1)

    def mean_advantage(self, user: torch.Tensor) -> torch.Tensor:
        """mean_a (u . e_a + b_a). The catalog mean is held constant in the gradient: its
        per-row share is 1/N (negligible at catalog scale) and would make every update's
        embedding gradient dense."""
        n = self.n_items
        with torch.no_grad():
            mean_bias = self.item_bias[:n].mean()
            # mean(e_a) without gathering N feature rows: each category's embedding
            # weighted by its share of the catalog, plus the mean price feature.
            share = torch.bincount(self.item_category[:n], minlength=self.category.num_embeddings)
            mean_item = (
                self.item[:n].mean(0)
                + (share.to(self.item.dtype) / n) @ self.category.weight
                + self.item_log_price[:n].mean() * self.price_vector
            )
        return user @ mean_item + mean_bias

    def _action_rows(
        self, actions: torch.Tensor, rows: ItemRows | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and biases of ``actions``, from the gathered rows when given."""
        if rows is None:
            return self.item_vectors(actions), self.item_bias[actions]
        at = rows.locate(actions)
        return rows.vector[at], rows.bias[at]

    def q_at(
        self,
        user: torch.Tensor,
        value: torch.Tensor,
        actions: torch.Tensor,
        rows: ItemRows | None = None,
    ) -> torch.Tensor:
        """Q(s, a) at one action per row: a gather and a dot product."""
        vector, bias = self._action_rows(actions, rows)
        adv = (user * vector).sum(-1) + bias
        return value + adv - self.mean_advantage(user)

    def q_many(
        self,
        user: torch.Tensor,
        value: torch.Tensor,
        actions: torch.Tensor,
        rows: ItemRows | None = None,
    ) -> torch.Tensor:
        """Q(s, a) at the same K actions for every row: [B, K]."""
        vector, bias = self._action_rows(actions, rows)
        shift = value - self.mean_advantage(user)
        return user @ vector.T + bias + shift.unsqueeze(1)

    def scores(self, user: torch.Tensor) -> torch.Tensor:
        """u . e_a + b_a over the whole active catalog (ranks like Q)."""
        n = self.n_items
        return torch.addmm(self.item_bias[:n], user, self.item_table(n).T)

    def q_all(self, user: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Q(s, .) over the whole catalog (the straightforward way; baseline and tests)."""
        return self.scores(user) + (value - self.mean_advantage(user)).unsqueeze(-1)

    @torch.no_grad()
    def selection_table(
        self, dtype: torch.dtype, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[e_a, b_a] rows in ``dtype`` (all rows, or those at ``index``) for ``best_items``."""
        if index is None:
            index = torch.arange(self.capacity, device=self.item.device)
        item, bias = self.item_vectors(index), self.item_bias[index]
        return torch.cat([item.detach(), bias.detach()[:, None]], 1).to(dtype)

    def best_items(
        self,
        user: torch.Tensor,
        dtype: torch.dtype = torch.float32,
        table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """argmax_a of u . e_a + b_a without materialising the [B, N] score matrix.

        Pass 1 keeps only each block's per-row maximum (``amax`` over the block, which
        vectorizes); pass 2 rescans, for each row, only the block that holds its maximum.
        ``dtype=bfloat16`` runs the products on AMX / tensor cores: only the selection is
        reduced-precision, the chosen action is evaluated in full precision by the caller.
        ``table`` is a maintained ``selection_table`` (saves re-casting the catalog).
        """
        n = self.n_items
        table = (self.selection_table(dtype) if table is None else table)[:n]
        ones = torch.ones(user.shape[0], 1, device=user.device, dtype=user.dtype)
        query = torch.cat([user, ones], 1).to(dtype)
        starts = range(0, n, SELECT_CHUNK)
        block_max = torch.stack([(table[s : s + SELECT_CHUNK] @ query.T).amax(0) for s in starts])
        best_block = block_max.argmax(0)
        best = torch.empty(user.shape[0], dtype=torch.int64, device=user.device)
        for block in torch.unique(best_block).tolist():
            rows = (best_block == block).nonzero().squeeze(1)
            start = block * SELECT_CHUNK
            scores = query[rows] @ table[start : start + SELECT_CHUNK].T
            best[rows] = scores.float().argmax(1) + start
        return best

    def q_slots(
        self, user: torch.Tensor, value: torch.Tensor, slate: torch.Tensor, rows: ItemRows | None
    ) -> torch.Tensor:
        """Q(s, a) at each row's own items ``slate`` [B, S]: [B, S]."""
        vector, bias = self._action_rows(slate, rows)
        adv = (user.unsqueeze(1) * vector).sum(-1) + bias
        return adv + (value - self.mean_advantage(user)).unsqueeze(1)

    # --- choice model ---------------------------------------------------------------------
    def positions(self, slots: int) -> torch.Tensor:
        """pos_j for slots 0..slots-1 (pos_0 = 0: the no-click logit absorbs the level)."""
        effect = torch.cat([self.position_effect.new_zeros(1), self.position_effect])
        index = torch.arange(slots, device=effect.device).clamp(max=POSITION_SLOTS - 1)
        return effect[index]

    def appeal(
        self, hidden: torch.Tensor, slate: torch.Tensor, rows: ItemRows | None = None
    ) -> torch.Tensor:
        """v(s, a) at each row's items ``slate`` [B, S]."""
        query = self.choice_query(hidden)
        if rows is None:
            vector, bias = self.item_vectors(slate), self.choice_bias[slate]
        else:
            at = rows.locate(slate)
            vector, bias = rows.vector[at], rows.choice_bias[at]
        appeal: torch.Tensor = (query.unsqueeze(1) * vector).sum(-1) + bias
        return appeal

    def choice_logits(
        self, hidden: torch.Tensor, slate: torch.Tensor, shown: torch.Tensor,
        rows: ItemRows | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """[B, 1 + S] logits of (no click, slot 0, ..., slot S-1); unshown slots -inf."""
        logits = self.appeal(hidden, slate, rows) + self.positions(slate.shape[1])
        logits = logits.masked_fill(~shown, -math.inf)
        return torch.cat([self.no_click(hidden), logits], 1)

    def appeal_all(self, hidden: torch.Tensor, table: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """v(s, a) over the active catalog (or the given rows): [B, N]."""
        n = self.n_items
        item = self.item_table(n) if table is None else table
        choice_bias = self.choice_bias[:n] if bias is None else bias
        return torch.addmm(choice_bias, self.choice_query(hidden), item.T)

    def supervised_logits(
        self, hidden: torch.Tensor, items: torch.Tensor | None, rows: ItemRows | None = None
    ) -> torch.Tensor:
        """Next-item logits at ``items`` ([B, K] or [K]) or over the whole catalog (None)."""
        query: torch.Tensor = self.next_item(hidden)
        if items is None:
            n = self.n_items
            return torch.addmm(self.next_item_bias[:n], query, self.item_table(n).T)
        if rows is None:
            vector, bias = self.item_vectors(items), self.next_item_bias[items]
        else:
            assert rows.next_bias is not None
            at = rows.locate(items)
            vector, bias = rows.vector[at], rows.next_bias[at]
        if items.dim() == 1:
            return query @ vector.T + bias
        appeal: torch.Tensor = (query.unsqueeze(1) * vector).sum(-1) + bias
        return appeal

    # --- response model -------------------------------------------------------------------
    def shrinkage(self, impressions: torch.Tensor) -> torch.Tensor:
        """w_a = n_a / (n_a + n0): how far an item's own evidence overrules the prior."""
        return impressions / (impressions + self.prior_impressions)

    def prior(
        self,
        hidden: torch.Tensor,
        table: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The prior of the response ranking over the active catalog, or over the given
        (item vectors, next-item biases, item biases) rows: alpha times the next-item
        logits (zero without the supervised head), plus beta times Q's advantage
        u . e_a + b_a where ``q_prior`` is on."""
        n = self.n_items
        if table is None:
            table = (self.item_table(n), self.next_item_bias[:n] if self.supervised else None,
                     self.item_bias[:n])  # fmt: skip
        item, next_bias, item_bias = table
        out = hidden.new_zeros(hidden.shape[0], item.shape[0])
        if self.supervised and next_bias is not None:
            out = out + self.prior_weight * torch.addmm(next_bias, self.next_item(hidden), item.T)
        if self.q_prior:
            out = out + self.q_prior_weight * torch.addmm(item_bias, self.user(hidden), item.T)
        return out

    def correction(
        self, hidden: torch.Tensor, slate: torch.Tensor, rows: ItemRows | None = None
    ) -> torch.Tensor:
        """W_r h . f_a + r_a at each row's items ``slate`` [B, S], unshrunk: training fits
        it to the evidence; ranking shrinks it by w_a (``response_table``)."""
        if rows is None:
            item, offset = self.item_vectors(slate), self.response_item[slate]
            bias = self.response_bias[slate]
        else:
            at = rows.locate(slate)
            item, offset, bias = rows.vector[at], rows.response_item[at], rows.response_bias[at]
        # The item's organic vector is the starting point (what every interaction says
        # about it); the slates move only its offset f_a.
        vector = item.detach() + offset
        correction: torch.Tensor = (self.response_query(hidden).unsqueeze(1) * vector).sum(
            -1
        ) + bias
        return correction

    def response_logits(
        self, hidden: torch.Tensor, slate: torch.Tensor, rows: ItemRows | None = None
    ) -> torch.Tensor:
        """z(s, a_j, j) of each slot of ``slate`` [B, S] (the training view)."""
        effect = torch.cat([self.response_position.new_zeros(1), self.response_position])
        position = effect[torch.arange(slate.shape[1], device=slate.device)
                          .clamp(max=POSITION_SLOTS - 1)]  # fmt: skip
        # The priors are organic evidence: the response loss sets their weights, not
        # their shape.
        prior = self.prior_weight * (
            self.supervised_logits(hidden, slate, rows).detach() if self.supervised else 0.0
        )
        if self.q_prior:
            vector, bias = self._action_rows(slate, rows)
            advantage = (self.user(hidden).unsqueeze(1) * vector).sum(-1) + bias
            prior = prior + self.q_prior_weight * advantage.detach()
        level: torch.Tensor = self.response_level(hidden)
        return prior + self.correction(hidden, slate, rows) + level + position

    def response_table(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The correction rows (e_a + w_a f_a, w_a r_a) of the first ``n`` items, as the
        export folds them into the graph: the item-specific evidence (f_a, r_a) shrunk by
        w_a, the part shared through e_a (what similar items taught W_r) in full."""
        n = self.n_items if n is None else n
        w = self.shrinkage(self.impressions[:n])
        vector = self.item_table(n).detach() + self.response_item[:n] * w[:, None]
        return vector, self.response_bias[:n] * w

    def response_scores(
        self,
        hidden: torch.Tensor,
        prior_table: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None,
        response_table: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """alpha * prior + the shrunk correction over the active catalog (or the given
        rows): what ``response`` snapshots rank by. The export passes its folded tables."""
        vector, bias = self.response_table() if response_table is None else response_table
        correction = torch.addmm(bias, self.response_query(hidden), vector.T)
        return self.prior(hidden, prior_table) + correction


def _grown(n: int) -> int:
    """Row capacity for ``n`` items: 1.5x headroom so growth reallocates rarely."""
    return max(64, int(n * 1.5))
