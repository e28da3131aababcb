"""Candidate retrieval, learner side: the inner product is each ranking's own score, the
query graph matches torch, an index over a catalog with structure reaches its recall
target, and one that cannot is refused."""

from __future__ import annotations

import io

import faiss
import numpy as np
import onnxruntime as ort
import pytest
import torch

from learner.export import ranking_scores, sample_states
from learner.qnet import QNetwork
from learner.retrieval import (
    QueryPolicy,
    RetrievalError,
    RetrievalExporter,
    build_index,
    recall_at,
)
from schemas.manifest import INDEX_FILE, ITEM_VECTORS_FILE, QUERY_MODEL_FILE, QUERY_OUTPUT

L = 6


def clustered_net(n_items: int, *, seed: int = 0, q_prior: bool = False) -> QNetwork:
    """A network whose item vectors sit around 40 category centres, as a catalog's do
    once item features and training have shaped them (random vectors have no structure
    for any index to use)."""
    torch.manual_seed(seed)
    net = QNetwork(n_items=n_items, dim=16, history_length=L, q_prior=q_prior)
    with torch.no_grad():
        centres = torch.randn(40, 16)
        net.item[:n_items] = centres[torch.arange(n_items) % 40] + 0.05 * torch.randn(n_items, 16)
        net.item_bias[:n_items] = 0.1 * torch.randn(n_items)
        net.response_item[:n_items] = 0.05 * torch.randn(n_items, 16)
        net.response_bias[:n_items] = 0.1 * torch.randn(n_items)
        if net.supervised:
            net.next_item_bias[:n_items] = 0.1 * torch.randn(n_items)
    return net


@pytest.mark.parametrize(("ranking", "q_prior"),
                         [("q", False), ("next_item", False), ("response", False),
                          ("response", True)])  # fmt: skip
def test_query_dot_vector_is_the_rankings_score(ranking: str, q_prior: bool) -> None:
    net = clustered_net(500, q_prior=q_prior).eval()
    policy = QueryPolicy(net, ranking, 500)
    items, events, ages = sample_states(32, L, 500, seed=3)
    with torch.no_grad():
        got = policy(items, events, ages) @ policy.vectors.T
        want = ranking_scores(net, ranking, items, events, ages)[:, :500]
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())


def test_slateq_is_not_an_inner_product() -> None:
    with pytest.raises(ValueError, match="not an inner product"):
        QueryPolicy(clustered_net(100), "slateq", 100)


def test_the_exported_index_reaches_its_recall_and_the_query_graph_matches_torch() -> None:
    n = 6_000
    net = clustered_net(n).eval()
    built = RetrievalExporter("response", candidates=200, min_recall=0.95).export(net, n)
    r = built.retrieval
    assert r.recall_at_50 >= 0.95 and r.kind.startswith("IVF") and r.candidates == 200
    assert r.score_max_abs_diff < 1e-4 and r.dim == 33  # 16 + 16 + the constant
    # The files are what serving loads: the graph's queries are torch's.
    session = ort.InferenceSession(built.files[QUERY_MODEL_FILE],
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    items, events, ages = sample_states(16, L, n, seed=11)
    (query,) = session.run([QUERY_OUTPUT], {"items": items.numpy(), "events": events.numpy(),
                                            "ages": ages.numpy()})  # fmt: skip
    with torch.no_grad():
        expected = QueryPolicy(net, "response", n)(items, events, ages).numpy()
    np.testing.assert_allclose(query, expected, atol=1e-4)
    vectors = np.load(io.BytesIO(built.files[ITEM_VECTORS_FILE]))
    index = faiss.deserialize_index(np.frombuffer(built.files[INDEX_FILE], dtype=np.uint8))
    assert vectors.shape == (n, 33) and index.ntotal == n
    # Recall measured independently on other states, at the recorded nprobe.
    faiss.extract_index_ivf(index).nprobe = r.nprobe
    assert recall_at(index, vectors, query, 200, 50) >= 0.9


def test_recall_on_a_synthetic_catalog_and_without_structure() -> None:
    rng = np.random.default_rng(0)
    n, dim = 20_000, 24
    centres = rng.standard_normal((64, dim)).astype(np.float32)
    clustered = centres[rng.integers(0, 64, n)] + 0.05 * rng.standard_normal((n, dim))
    queries = rng.standard_normal((200, dim)).astype(np.float32)
    index, _ = build_index(clustered.astype(np.float32))
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = ivf.nlist // 8  # an eighth of the lists
    assert recall_at(index, clustered.astype(np.float32), queries, 256, 50) >= 0.95
    # Isotropic vectors: the same search finds far less (no structure to exploit).
    flat = rng.standard_normal((n, dim)).astype(np.float32)
    index, _ = build_index(flat)
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = ivf.nlist // 8
    assert recall_at(index, flat, queries, 256, 50) < 0.8


def test_an_index_that_misses_the_target_is_refused() -> None:
    torch.manual_seed(0)
    net = QNetwork(n_items=4_000, dim=32, history_length=L)  # isotropic random vectors
    with pytest.raises(RetrievalError, match="RECQ_INDEX_MIN_RECALL"):
        RetrievalExporter("q", candidates=50, min_recall=0.999).export(net, 4_000)
