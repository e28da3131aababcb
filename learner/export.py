"""ONNX snapshots that serving can trust.

The exported graph takes a batch of left-padded states (items, events, ages: int64
[B, L]) and an exclusion list (int64 [B, X], -1 = no item; X may be 0) and returns the
top-K item indices (int64 [B, K]) and their scores (float32 [B, K]) over the catalog
as it was at export time: with ``ranking="response"`` the response model's ranking score
(``QNetwork.response_scores``: the organic prior plus the shrunk slate correction),
with ``"next_item"`` the supervised head's next-item logits (the supervised control), with
``"q"`` Q-values, with ``"slateq"`` the SlateQ top-k score
exp(v(s, a) - max_a' v(s, a')) x Q(s, a) of the choice model and Q
(``learner.dqn.slateq_score``, relative to the row's most appealing item).
Excluded items score ``EXCLUDED_SCORE``. Parity with torch is measured on a sample batch
before anything is written.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

from learner.dqn import slateq_score
from learner.qnet import QNetwork
from schemas.features import N_EVENT_CODES
from schemas.manifest import EXCLUDED_SCORE, INPUT_NAMES, OUTPUT_NAMES, Parity, Ranking


def score_width(active: int, k: int, capacity: int) -> int:
    """Rows a snapshot scores: the active catalog rounded up to a step of capacity / 8
    (and at least K), so the graph is re-traced at most ~8 times between two growths of
    the network while scoring at most an eighth of the capacity in spare rows. (Scoring
    every row of a 1.5x-headroom table streamed 50% more memory per call than the catalog
    needs; at small batches the top-K is bound by exactly that.)"""
    step = max(1, -(-capacity // 8))
    return min(capacity, max(-(-max(active, k) // step) * step, 1))


class TopKPolicy(nn.Module):
    """Export view of a QNetwork: top-K over the active catalog rows, in-graph.

    What depends only on the weights is computed here, once per snapshot, and stored as
    buffers (initializers of the graph): the rows scored (the active catalog plus spare
    rows up to ``score_width``), their biases with inactive rows set to
    ``EXCLUDED_SCORE``, and the dueling mean over the active catalog. The number of
    active rows is a tensor too, so one traced graph serves every catalog size up to its
    width and later snapshots only replace initializers (see ``SnapshotExporter``)."""

    active: torch.Tensor
    mean_item: torch.Tensor
    mean_bias: torch.Tensor
    score_item: torch.Tensor
    score_bias: torch.Tensor
    choice_bias: torch.Tensor
    live: torch.Tensor
    response_item: torch.Tensor
    response_bias: torch.Tensor
    next_bias: torch.Tensor

    def __init__(
        self, net: QNetwork, k: int, n_active: int | None = None, ranking: str = "q"
    ) -> None:
        super().__init__()
        self.net = net
        self.ranking = ranking
        self.k = min(k, net.capacity)
        active = net.n_items if n_active is None else min(n_active, net.n_items)
        self.width = score_width(active, self.k, net.capacity)
        with torch.no_grad():
            # The item features are folded into the rows here: serving needs nothing new.
            item, bias = net.item_table(net.capacity).detach(), net.item_bias.detach()
            live = torch.arange(self.width, device=item.device) < active
            self.register_buffer("active", torch.tensor(active, dtype=torch.int64))
            self.register_buffer("mean_item", item[:active].mean(0))
            self.register_buffer("mean_bias", bias[:active].mean())
            self.register_buffer("score_item", item[: self.width].clone())
            if ranking == "response":
                # The shrinkage w_a is folded into the correction rows here, once.
                vector, correction = net.response_table(active)
                spare = self.width - active
                self.register_buffer("response_item", F.pad(vector.detach(), (0, 0, 0, spare)))
                self.register_buffer("response_bias", F.pad(correction.detach(), (0, spare)))
                next_bias = (net.next_item_bias if net.supervised else net.item_bias.new_zeros(
                    net.capacity)).detach()[: self.width].clone()  # fmt: skip
                self.register_buffer("next_bias", next_bias)
                self.register_buffer("live", live)
                self.register_buffer("score_bias", bias[: self.width].clone())
            elif ranking == "next_item":
                next_bias = net.next_item_bias.detach()[: self.width]
                self.register_buffer("next_bias", next_bias.masked_fill(~live, EXCLUDED_SCORE))
                self.register_buffer("score_bias", bias[: self.width].clone())
            elif ranking == "slateq":
                # The product exp(v) * Q is masked after it is formed: a masked bias
                # times a tiny exp(v) would not stay excluded.
                self.register_buffer("score_bias", bias[: self.width].clone())
                self.register_buffer("choice_bias", net.choice_bias.detach()[: self.width].clone())
                self.register_buffer("live", live)
            else:
                scored_bias = bias[: self.width].masked_fill(~live, EXCLUDED_SCORE)
                self.register_buffer("score_bias", scored_bias)

    def forward(
        self, items: torch.Tensor, events: torch.Tensor, ages: torch.Tensor, exclude: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        # States name active items only, so the scored rows serve as the embedding table
        # too (the graph carries no second, full-capacity copy of it).
        hidden, user, value = net.encode(items, events, ages, table=self.score_item)
        shift = value - (user @ self.mean_item + self.mean_bias)
        q = user @ self.score_item.T + self.score_bias + shift.unsqueeze(-1)
        if self.ranking == "response":
            q = net.response_scores(
                hidden,
                (self.score_item, self.next_bias, self.score_bias),
                (self.response_item, self.response_bias),
            ).masked_fill(~self.live, EXCLUDED_SCORE)
        elif self.ranking == "next_item":
            q = torch.addmm(self.next_bias, net.next_item(hidden), self.score_item.T)
        elif self.ranking == "slateq":
            appeal = net.appeal_all(hidden, self.score_item, self.choice_bias)
            # Relative to the row's most appealing item: the same ranking, and scores of
            # the size of Q (exp(v) alone reaches 1e6 and float32 parity would be lost).
            top = appeal.masked_fill(~self.live, -math.inf).amax(1, keepdim=True)
            q = slateq_score(appeal - top, q).masked_fill(~self.live, EXCLUDED_SCORE)
        # Padding (-1) and items outside the catalog go to a spare column, then dropped.
        rows = self.score_item.shape[0]
        spare = torch.full_like(exclude, rows)
        target = torch.where((exclude >= 0) & (exclude < self.active), exclude, spare)
        q = torch.cat([q, torch.zeros_like(q[:, :1])], 1)
        q = q.scatter(1, target, torch.full_like(target, 0, dtype=q.dtype) + EXCLUDED_SCORE)
        scores, indices = torch.topk(q[:, :rows], self.k, dim=1)
        return indices, scores


def ranking_scores(
    net: QNetwork, ranking: str, items: torch.Tensor, events: torch.Tensor, ages: torch.Tensor
) -> torch.Tensor:
    """What a snapshot of ``net`` with ``ranking`` scores over the active catalog, in torch
    ([B, N]; before exclusions): the reference its ONNX graph is held to, and what the
    offline closed loop ranks by."""
    hidden, user, value = net.encode(items, events, ages)
    if ranking == "response":
        return net.response_scores(hidden)
    if ranking == "next_item":
        return net.supervised_logits(hidden, None)
    q = net.q_all(user, value)
    if ranking == "slateq":
        appeal = net.appeal_all(hidden)
        return slateq_score(appeal - appeal.amax(1, keepdim=True), q)
    return q


def io_spec(history_length: int, k: int) -> dict[str, Any]:
    """What a snapshot's model.onnx takes and returns (recorded in the manifest)."""
    seq = {"dtype": "int64", "shape": ["batch", history_length]}
    return {
        "inputs": {
            "items": seq, "events": seq, "ages": seq,
            "exclude": {"dtype": "int64", "shape": ["batch", "excluded"]},
        },
        "outputs": {
            "indices": {"dtype": "int64", "shape": ["batch", k]},
            "scores": {"dtype": "float32", "shape": ["batch", k]},
        },
    }  # fmt: skip


def export_onnx(policy: TopKPolicy) -> onnx.ModelProto:
    """Trace and convert the policy (dynamic batch and exclusion length). Seconds of work:
    done once per network shape, see ``SnapshotExporter``."""
    n_items = int(policy.active)
    example = sample_states(4, policy.net.history_length, n_items, seed=0)
    exclude = torch.tensor([[0, -1], [1, 2], [-1, -1], [3, n_items + 5]])
    batch = torch.export.Dim("batch", min=1, max=65_536)
    excluded = torch.export.Dim("excluded", min=0, max=100_000)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter chatter about unused optimizations
        program = torch.onnx.export(
            policy,
            (*example, exclude),
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={
                "items": {0: batch},
                "events": {0: batch},
                "ages": {0: batch},
                "exclude": {0: batch, 1: excluded},
            },
            # Unoptimized keeps one initializer per named parameter, which is what lets
            # later snapshots swap weights in; onnxruntime optimizes at session creation.
            optimize=False,
            verbose=False,
        )
    assert program is not None
    program.save(buffer)  # type: ignore[arg-type]
    return onnx.load_from_string(buffer.getvalue())


class SnapshotExporter:
    """Exports a QNetwork as ONNX bytes, re-tracing only when the graph's shape changes
    (row capacity, K, architecture) and otherwise writing the current weights into the
    cached graph. Every result is still parity-checked against torch by the caller."""

    def __init__(self, k: int, ranking: Ranking = "q") -> None:
        self.k = k
        self.ranking = ranking
        self._template: onnx.ModelProto | None = None
        self._signature: tuple[object, ...] | None = None
        self.traces = 0

    def export(self, net: QNetwork, n_active: int | None = None) -> tuple[bytes, TopKPolicy]:
        policy = TopKPolicy(net, self.k, n_active, self.ranking).eval()
        signature = (net.capacity, policy.width, policy.k, net.encoder_kind, net.dim,
                     net.history_length, net.supervised, self.ranking)  # fmt: skip
        if self._template is None or signature != self._signature:
            self._template = export_onnx(policy)
            self._signature = signature
            self.traces += 1
        return graph_with_weights(self._template, policy), policy


def graph_with_weights(template: onnx.ModelProto, module: nn.Module) -> bytes:
    """A traced graph with ``module``'s current weights as its initializers (the graph's
    shape must be the module's): milliseconds, against seconds for a new trace."""
    state = {name: t.detach().cpu() for name, t in module.state_dict().items()}
    model = onnx.ModelProto()
    model.CopyFrom(template)
    for init in model.graph.initializer:
        if init.name not in state:
            raise RuntimeError(f"exported graph has an unnamed initializer {init.name!r}")
        init.CopyFrom(numpy_helper.from_array(state[init.name].numpy(), init.name))
    data: bytes = model.SerializeToString()
    return data


def sample_states(
    batch: int, history_length: int, n_items: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, history_length + 1, (batch, 1), generator=g)
    real = torch.arange(history_length)[None, :] >= history_length - lengths
    items = torch.randint(0, n_items, (batch, history_length), generator=g) * real
    events = torch.randint(1, N_EVENT_CODES, (batch, history_length), generator=g) * real
    ages = torch.randint(1, 8, (batch, history_length), generator=g) * real
    return items, events, ages


def check_parity(model: bytes, policy: TopKPolicy, batch: int = 64, seed: int = 1) -> Parity:
    """Run onnxruntime and torch on the same sample batch (with exclusions)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # CastLike constant-folding notices are not errors
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    n_items = int(policy.active)
    items, events, ages = sample_states(batch, policy.net.history_length, n_items, seed)
    generator = torch.Generator().manual_seed(seed)
    exclude = torch.randint(-1, n_items, (batch, 3), generator=generator)
    with torch.no_grad():
        t_idx, t_scores = policy(items, events, ages, exclude)
    o_idx, o_scores = session.run(
        list(OUTPUT_NAMES),
        {"items": items.numpy(), "events": events.numpy(), "ages": ages.numpy(),
         "exclude": exclude.numpy()},
    )  # fmt: skip
    # Only live entries are compared: excluded items (and the padding of a top-K wider
    # than the catalog) all score EXCLUDED_SCORE and tie in any order.
    live = t_scores.numpy() > EXCLUDED_SCORE / 2
    same = (o_idx == t_idx.numpy()) | ~live
    equal = float(
        np.mean(np.all(same, axis=1) & np.all(live == (o_scores > EXCLUDED_SCORE / 2), axis=1))
    )
    diff = float(np.max(np.abs(o_scores - t_scores.numpy())[live], initial=0.0))
    return Parity(batch=batch, topk_equal=equal, max_abs_diff=diff)
