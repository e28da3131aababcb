"""ONNX snapshots against torch: top-K and scores on sample batches, exclusions, items
outside the active catalog, weight swaps into the cached graph, re-trace on growth."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from learner.export import OUTPUT_NAMES, SnapshotExporter, check_parity, sample_states
from learner.qnet import QNetwork
from schemas.manifest import EXCLUDED_SCORE

L = 6


@pytest.fixture(scope="module")
def exported() -> tuple[SnapshotExporter, QNetwork]:
    torch.manual_seed(0)
    net = QNetwork(n_items=300, dim=16, history_length=L, encoder="gru", capacity=400)
    exporter = SnapshotExporter(k=10)
    exporter.export(net, 280)
    return exporter, net


def run(
    model: bytes, items: torch.Tensor, exclude: np.ndarray,
    events: torch.Tensor | None = None, ages: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Run the snapshot; by default every nonzero item is a click in age bucket 1."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    default = (items > 0).long()
    feeds = {"items": items.numpy(), "events": (default if events is None else events).numpy(),
             "ages": (default if ages is None else ages).numpy(), "exclude": exclude}  # fmt: skip
    indices, scores = session.run(OUTPUT_NAMES, feeds)
    return indices, scores


def test_onnx_top_k_matches_torch(exported: tuple[SnapshotExporter, QNetwork]) -> None:
    exporter, net = exported
    model, policy = exporter.export(net, 280)
    parity = check_parity(model, policy, batch=128)
    assert parity.topk_equal == 1.0
    assert parity.max_abs_diff < 1e-4
    # Also against the training-side scorer: the same ranking as Q over the catalog.
    items, events, ages = sample_states(16, L, 280, seed=3)
    with torch.no_grad():
        _, u, v = net.encode(items, events, ages)
        # The snapshot's dueling mean runs over its own (active) catalog of 280 items.
        mean = u @ net.item[:280].mean(0) + net.item_bias[:280].mean()
        q = net.scores(u)[:, :280] + (v - mean)[:, None]
    top_q, top_i = q.topk(10, dim=1)
    indices, scores = run(model, items, np.full((16, 0), -1, np.int64), events, ages)
    assert (indices == top_i.numpy()).all()
    assert np.abs(scores - top_q.numpy()).max() < 1e-4


def test_exclusions_and_inactive_items_never_come_out(
    exported: tuple[SnapshotExporter, QNetwork],
) -> None:
    exporter, net = exported
    model, _ = exporter.export(net, 50)  # only the first 50 items are named by the vocabulary
    items = torch.tensor([[0, 0, 0, 0, 3, 7]] * 2)
    _, free_scores = run(model, items, np.full((2, 0), -1, np.int64))
    free, _ = run(model, items, np.full((2, 0), -1, np.int64))
    assert (free < 50).all()
    banned = free[0, :4]
    exclude = np.array([[*banned, -1, 999], [-1, -1, -1, -1, -1, -1]], np.int64)
    got, scores = run(model, items, exclude)
    assert not set(banned) & set(got[0].tolist())
    assert (got[1] == free[1]).all()  # padding (-1) excludes nothing
    assert (scores > EXCLUDED_SCORE / 2).all()
    # More exclusions than the catalog has room for: the rest score EXCLUDED_SCORE.
    model5, _ = exporter.export(net, 12)
    got5, scores5 = run(model5, items[:1], np.arange(12, dtype=np.int64)[None, :4])
    kept = scores5[0] > EXCLUDED_SCORE / 2
    assert sorted(got5[0][kept].tolist()) == list(range(4, 12))
    assert free_scores.dtype == np.float32


def test_weights_are_swapped_into_the_cached_graph_and_growth_retraces(
    exported: tuple[SnapshotExporter, QNetwork],
) -> None:
    exporter, net = exported
    exporter.export(net, 280)  # scores 300 rows: the catalog rounded up to capacity / 8
    traces = exporter.traces
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model, policy = exporter.export(net, 300)
    assert exporter.traces == traces  # same shapes: only the weights were replaced
    assert check_parity(model, policy).topk_equal == 1.0
    # Only the scored rows are in the graph, not the network's 400-row table.
    shapes = {i.name: list(i.dims) for i in onnx.load_from_string(model).graph.initializer}
    assert shapes["score_item"] == [300, 16] and "net.item" not in shapes
    net.ensure_items(320)  # within the 400 rows: the network is not reallocated
    model, policy = exporter.export(net, 301)  # but the catalog outgrew the scored rows
    assert exporter.traces == traces + 1 and policy.width == 350
    assert check_parity(model, policy).topk_equal == 1.0
    traces = exporter.traces
    net.ensure_items(450)  # beyond the 400 rows: a new graph
    model, policy = exporter.export(net, 450)
    assert exporter.traces == traces + 1
    parity = check_parity(model, policy)
    assert parity.topk_equal == 1.0 and parity.max_abs_diff < 1e-4
