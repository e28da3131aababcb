"""Serving through a snapshot's candidate index: the registry loads and checks it, the
answers carry the snapshot's exact scores and agree with the in-graph top-K, filters and
exclusions hold, and a snapshot with a broken index is rejected while serving goes on."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import orjson
import pytest
import torch

from inference.policy import Popularity
from inference.recommender import Pending, Recommender
from inference.registry import REJECTIONS, SnapshotRegistry
from inference.state import ShopperStates
from learner.export import SnapshotExporter, check_parity, io_spec, ranking_scores, sample_states
from learner.retrieval import RetrievalExporter
from schemas.exploration import Policy
from schemas.manifest import EXCLUDED_SCORE, INDEX_FILE, MANIFEST_FILE
from schemas.model_store import ModelStore, WrittenSnapshot, sha256_of
from schemas.records import CartEvent, ClickEvent, LineItem, PurchaseEvent, RecRequest
from schemas.reward import Reward
from tests.learner.test_retrieval import L, clustered_net

N = 5_000
NOW = 1_795_000_000_000


# One of each for the module: they trace their graphs once and then swap weights in.
TOP_K = SnapshotExporter(20, "response")
INDEX = RetrievalExporter("response", candidates=200, min_recall=0.95)


def write(root: Path, net: torch.nn.Module) -> WrittenSnapshot:
    model, policy = TOP_K.export(net, N)  # type: ignore[arg-type]
    built = INDEX.export(net, N)  # type: ignore[arg-type]
    return ModelStore(root).write(
        model=model, item_ids=[f"sku-{i}" for i in range(N)], step=1, k=20, history_length=L,
        encoder="gru", reward=Reward(), io_spec=io_spec(L, 20), ranking="response",
        parity=check_parity(model, policy), metrics={},
        retrieval=(built.retrieval, built.files),
    )  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    root = tmp_path_factory.mktemp("store")
    net = clustered_net(N, seed=5).eval()
    write(root, net)
    return root, net


def test_index_answers_are_the_snapshots_scores_and_agree_with_exact_top_k(
    served: tuple[Path, torch.nn.Module],
) -> None:
    root, net = served
    model = SnapshotRegistry(root).scan()
    assert model is not None and model.candidates is not None
    items, events, ages = sample_states(64, L, N, seed=21)
    exclude = np.full((64, 3), -1, np.int64)
    with torch.no_grad():
        exact = ranking_scores(net, "response", items, events, ages)[:, :N].numpy()  # type: ignore[arg-type]
    exclude[:, 0] = exact.argmax(1)  # the best item of every row is excluded
    indices, scores = model.predict(items.numpy(), events.numpy(), ages.numpy(), exclude)
    assert indices.shape == scores.shape == (64, 20)
    rows = np.arange(64)[:, None]
    np.testing.assert_allclose(scores, exact[rows, indices], atol=1e-4)  # exact scores
    assert not (indices == exclude[:, :1]).any()
    masked = exact.copy()
    masked[np.arange(64), exclude[:, 0]] = -np.inf
    best = np.argsort(-masked, axis=1)[:, :20]
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(indices, best, strict=True)])
    assert overlap >= 0.9, overlap
    # The in-graph top-K of the same snapshot agrees with the index path.
    in_graph, graph_scores = model.session.run(
        ["indices", "scores"], {"items": items.numpy(), "events": events.numpy(),
                                "ages": ages.numpy(), "exclude": exclude})  # fmt: skip
    assert np.mean(in_graph[:, 0] == indices[:, 0]) >= 0.9
    assert (graph_scores > EXCLUDED_SCORE / 2).all()


def test_filters_and_exclusions_hold_on_the_index_path(
    served: tuple[Path, torch.nn.Module],
) -> None:
    root, _ = served
    model = SnapshotRegistry(root).scan()
    assert model is not None and model.candidates is not None
    rec = Recommender(states=ShopperStates(L), popularity=Popularity(), policy=Policy("greedy"),
                      blocklist=frozenset(), seed=1)  # fmt: skip
    e = {"user_id": "ann", "ts_ms": NOW}
    rec.states.apply(ClickEvent(event_id="c1", item_id="sku-3", **e))
    rec.states.apply(ClickEvent(event_id="c2", item_id="sku-43", **e))
    request = RecRequest(request_id="r0", user_id="ann", k=10, ts_ms=NOW + 1)
    (first,) = rec.answer([Pending(request, NOW, NOW)], model)
    top = [i.item_id for i in first.items]
    assert first.model_version == str(model.version) and len(top) == 10
    # What was just shown best: bought, carted, excluded by the request, blocklisted.
    rec.states.apply(PurchaseEvent(event_id="p1", order_id="o", items=[
        LineItem(item_id=top[0], quantity=1, unit_price=1.0)], **e))  # fmt: skip
    rec.states.apply(CartEvent(event_id="a1", item_id=top[1], action="add", **e))
    rec.blocklist = frozenset({top[3]})
    request = RecRequest(request_id="r1", user_id="ann", k=10, ts_ms=NOW + 1,
                         exclude_item_ids=[top[2]])  # fmt: skip
    (second,) = rec.answer([Pending(request, NOW, NOW)], model)
    shown = [i.item_id for i in second.items]
    assert len(shown) == 10 and not set(shown) & set(top[:4])


def test_a_snapshot_with_a_broken_index_is_rejected_and_serving_continues(
    served: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    _, net = served
    store = tmp_path / "store"
    good = write(store, net)
    registry = SnapshotRegistry(store)
    assert registry.scan() is not None and registry.current is not None
    bad = write(store, net)
    # An index of other dimensions, listed in the manifest with its true digest: the
    # hashes pass, the checks of the index must not.
    wrong = faiss.IndexFlatIP(7)
    wrong.add(np.zeros((N, 7), np.float32))
    data = faiss.serialize_index(wrong).tobytes()
    (bad.path / INDEX_FILE).write_bytes(data)
    manifest = orjson.loads((bad.path / MANIFEST_FILE).read_bytes())
    manifest["files"][INDEX_FILE] = {"sha256": sha256_of(data), "bytes": len(data)}
    (bad.path / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    before = REJECTIONS.labels("invalid_index")._value.get()
    assert not registry.offer(bad.version, bad.path.name)
    assert REJECTIONS.labels("invalid_index")._value.get() == before + 1
    assert "index of" in registry.rejected[bad.version]
    assert registry.current.version == good.version  # still serving the good one
    # Garbage bytes with a matching digest: unreadable, rejected the same way.
    third = write(store, net)
    (third.path / INDEX_FILE).write_bytes(b"not an index")
    manifest = orjson.loads((third.path / MANIFEST_FILE).read_bytes())
    manifest["files"][INDEX_FILE] = {"sha256": sha256_of(b"not an index"), "bytes": 12}
    (third.path / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    assert not registry.offer(third.version, third.path.name)
    assert registry.current.version == good.version
