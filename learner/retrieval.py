"""Candidate retrieval for large catalogs: a snapshot's ranking written as an inner
product, and a faiss index over its item side.

Every ranking but SlateQ's scores item a for state s as a sum of dot products between
projections of the encoder's hidden state and per-item vectors, plus per-item and
per-state constants. Stacked, that is one inner product

    score(s, a) = query(s) . vector_a

(the "q" ranking: query = [u, shift, 1], vector = [e_a, 1, b_a]; "next_item":
[W_s h, 1] . [e_a, c_a]; "response": [alpha W_s h + beta u, W_r h, 1] .
[e_a, e_a + w_a f_a, alpha c_a + beta b_a + w_a r_a]), so a maximum-inner-product index
over the vectors proposes the best candidates and serving scores those exactly. SlateQ's
exp(v) x Q is not an inner product: its snapshots keep the exact in-graph top-K.

The learner exports ``query.onnx`` (states -> query), the vectors and an IVF index,
and measures recall@50 of "index candidates, exactly scored" against exact scoring on a
sample of states before writing; it searches more lists (nprobe) until the recall
reaches ``RECQ_INDEX_MIN_RECALL`` and refuses the snapshot if half the lists do not."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import faiss
import numpy as np
import onnx
import torch
from torch import nn

from learner.export import graph_with_weights, ranking_scores, sample_states
from learner.qnet import QNetwork
from schemas.manifest import (
    EXCLUDED_SCORE,
    INDEX_FILE,
    ITEM_VECTORS_FILE,
    QUERY_INPUT_NAMES,
    QUERY_MODEL_FILE,
    QUERY_OUTPUT,
    Ranking,
    Retrieval,
)
from schemas.retrieval import rank_candidates

RECALL_AT = 50
#: Rankings that are an inner product (see the module docstring).
RETRIEVABLE: frozenset[str] = frozenset({"q", "next_item", "response"})


class RetrievalError(RuntimeError):
    """The index missed its recall target: the snapshot is not written."""


class QueryPolicy(nn.Module):
    """Export view of a QNetwork for retrieval: states -> query vectors, with ``vectors``
    (not part of the graph) the item side of the same inner product."""

    table: torch.Tensor
    mean_item: torch.Tensor
    mean_bias: torch.Tensor

    def __init__(self, net: QNetwork, ranking: str, n_active: int) -> None:
        super().__init__()
        if ranking not in RETRIEVABLE:
            raise ValueError(f"ranking {ranking!r} is not an inner product: no retrieval")
        self.net = net
        self.ranking = ranking
        with torch.no_grad():
            item = net.item_table(net.capacity).detach()[:n_active].clone()
            bias = net.item_bias.detach()[:n_active]
            ones = torch.ones(n_active, 1)
            # States name active items only: the active rows are the embedding table too.
            self.register_buffer("table", item)
            self.register_buffer("mean_item", item.mean(0))
            self.register_buffer("mean_bias", bias.mean())
            if ranking == "q":
                self.vectors = torch.cat([item, ones, bias[:, None]], 1)
            elif ranking == "next_item":
                self.vectors = torch.cat([item, net.next_item_bias.detach()[:n_active, None]], 1)
            else:
                vector, correction = net.response_table(n_active)
                constant = correction.detach().clone()
                if net.supervised:
                    constant += net.prior_weight.detach() * net.next_item_bias.detach()[:n_active]
                if net.q_prior:
                    constant += net.q_prior_weight.detach() * bias
                self.vectors = torch.cat([item, vector.detach(), constant[:, None]], 1)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def forward(
        self, items: torch.Tensor, events: torch.Tensor, ages: torch.Tensor
    ) -> torch.Tensor:
        net = self.net
        hidden, user, value = net.encode(items, events, ages, table=self.table)
        one = torch.ones_like(value).unsqueeze(-1)
        if self.ranking == "q":
            shift = value - (user @ self.mean_item + self.mean_bias)
            return torch.cat([user, shift.unsqueeze(-1), one], 1)
        if self.ranking == "next_item":
            return torch.cat([net.next_item(hidden), one], 1)
        prior = torch.zeros_like(user)
        if net.supervised:
            prior = prior + net.prior_weight * net.next_item(hidden)
        if net.q_prior:
            prior = prior + net.q_prior_weight * net.user(hidden)
        return torch.cat([prior, net.response_query(hidden), one], 1)


def export_query_onnx(policy: QueryPolicy) -> onnx.ModelProto:
    """Trace and convert (dynamic batch); seconds of work, cached by ``RetrievalExporter``."""
    example = sample_states(4, policy.net.history_length, int(policy.table.shape[0]), seed=0)
    batch = torch.export.Dim("batch", min=1, max=65_536)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            policy, example, dynamo=True, input_names=list(QUERY_INPUT_NAMES),
            output_names=[QUERY_OUTPUT],
            dynamic_shapes={name: {0: batch} for name in QUERY_INPUT_NAMES},
            optimize=False, verbose=False,
        )  # fmt: skip
    assert program is not None
    program.save(buffer)  # type: ignore[arg-type]
    return onnx.load_from_string(buffer.getvalue())


def build_index(vectors: np.ndarray, seed: int = 0) -> tuple[faiss.Index, str]:
    """An inverted-file index with exact (flat) vectors: about 4 sqrt(N) lists, k-means
    trained on a sample of 40 vectors per list (22 s at a million items on 2 cores).
    At a million items 4,000 lists reach recall@50 0.994 searching 64 of them (0.56 ms a
    query), where 1,000 lists need 128 for 0.964 (3.0 ms): smaller lists, less to scan."""
    n, dim = vectors.shape
    nlist = max(1, min(4 * int(math.sqrt(n)), n // 40))
    kind = f"IVF{nlist},Flat"
    index = faiss.index_factory(dim, kind, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(n, min(n, 40 * nlist), replace=False)]
    index.train(np.ascontiguousarray(sample))
    index.add(vectors)
    return index, kind


def search(
    index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, candidates: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """What serving does (``schemas.retrieval.rank_candidates``, no exclusions): the
    index's candidates, scored exactly, best ``k`` first; returns (indices, scores)."""
    _, found = index.search(queries, candidates)
    return rank_candidates(queries, vectors, found, np.zeros((len(queries), 0), np.int64), k)


#: Queries scored against the whole catalog at a time (64 x 1M float32: 256 MB).
CHUNK = 64


def top_of(scores: np.ndarray, at: int) -> np.ndarray:
    """Each row's top-``at`` column indices (best first)."""
    at = min(at, scores.shape[1])
    top = np.argpartition(-scores, at - 1, axis=1)[:, :at]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    return np.take_along_axis(top, order, 1)


def exact_top(vectors: np.ndarray, queries: np.ndarray, at: int) -> np.ndarray:
    """Each query's exact top-``at`` item indices (best first), ``CHUNK`` queries at a
    time so a million-item catalog does not need a [states, items] matrix at once."""
    return np.concatenate([top_of(queries[i : i + CHUNK] @ vectors.T, at)
                           for i in range(0, len(queries), CHUNK)])  # fmt: skip


def recall_at(
    index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, candidates: int, at: int,
    exact: np.ndarray | None = None,
) -> float:  # fmt: skip
    """Mean share of each query's exact top-``at`` (``exact``, computed when not given)
    that the index path also ranks top-``at``."""
    at = min(at, vectors.shape[0])
    exact = exact_top(vectors, queries, at) if exact is None else exact
    found, scores = search(index, vectors, queries, candidates, at)
    live = scores > EXCLUDED_SCORE / 2  # fewer candidates than ``at``: padding
    hits = [len(set(e.tolist()) & set(f[m].tolist()))
            for e, f, m in zip(exact, found, live, strict=True)]  # fmt: skip
    return float(np.mean(hits)) / at


@dataclass(frozen=True)
class RetrievalFiles:
    retrieval: Retrieval
    files: dict[str, bytes]


class RetrievalExporter:
    """Builds a snapshot's retrieval files, re-tracing the query graph only when its
    shape changes (as ``SnapshotExporter`` does for the top-K graph)."""

    def __init__(
        self, ranking: Ranking, *, candidates: int, min_recall: float, states: int = 512
    ) -> None:
        self.ranking = ranking
        self.candidates = candidates
        self.min_recall = min_recall
        self.states = states
        self._template: onnx.ModelProto | None = None
        self._signature: tuple[object, ...] | None = None

    def export(self, net: QNetwork, n_active: int) -> RetrievalFiles:
        policy = QueryPolicy(net, self.ranking, n_active).eval()
        signature = (n_active, net.encoder_kind, net.dim, net.history_length, net.supervised,
                     net.q_prior, self.ranking)  # fmt: skip
        if self._template is None or signature != self._signature:
            self._template, self._signature = export_query_onnx(policy), signature
        query_model = graph_with_weights(self._template, policy)
        items, events, ages = sample_states(self.states, net.history_length, n_active, seed=7)
        # The inner product against torch's own ranking, and each state's exact top-50
        # from the same scores, CHUNK states at a time.
        diff, tops = 0.0, []
        with torch.no_grad():
            queries = policy(items, events, ages)
            for start in range(0, self.states, CHUNK):
                rows = slice(start, start + CHUNK)
                scores = queries[rows] @ policy.vectors.T
                reference = ranking_scores(net, self.ranking, items[rows], events[rows],
                                           ages[rows])[:, :n_active]  # fmt: skip
                diff = max(diff, float((scores - reference).abs().max()))
                tops.append(top_of(scores.numpy(), RECALL_AT))
        exact = np.concatenate(tops)
        vectors = policy.vectors.numpy().astype(np.float32)
        queries_np = queries.numpy().astype(np.float32)
        index, kind = build_index(vectors)
        ivf = faiss.extract_index_ivf(index)
        candidates = min(self.candidates, n_active)
        recall, nprobe = 0.0, 1
        while True:
            ivf.nprobe = nprobe
            recall = recall_at(index, vectors, queries_np, candidates, RECALL_AT, exact)
            if recall >= self.min_recall or nprobe >= max(1, ivf.nlist // 2):
                break
            nprobe = min(2 * nprobe, max(1, ivf.nlist // 2))
        if recall < self.min_recall:
            raise RetrievalError(
                f"index recall@{RECALL_AT} {recall:.3f} < RECQ_INDEX_MIN_RECALL "
                f"{self.min_recall} with {kind} searching {nprobe} lists and {candidates} "
                "candidates: raise RECQ_INDEX_CANDIDATES, or RECQ_INDEX_MIN_ITEMS to serve "
                "this catalog size exactly"
            )
        vector_bytes = io.BytesIO()
        np.save(vector_bytes, vectors, allow_pickle=False)
        retrieval = Retrieval(dim=policy.dim, kind=kind, nprobe=nprobe, candidates=candidates,
                              recall_at_50=recall, states=self.states,
                              score_max_abs_diff=diff)  # fmt: skip
        files = {
            QUERY_MODEL_FILE: query_model,
            ITEM_VECTORS_FILE: vector_bytes.getvalue(),
            INDEX_FILE: faiss.serialize_index(index).tobytes(),
        }
        return RetrievalFiles(retrieval, files)
