"""Model + retrieval time per request against catalog size: the same snapshot served by
its exact in-graph top-K and by its candidate index (``inference.retrieval``), side by
side, at --sizes items (default 10k, 100k, 1M). Each snapshot is written by the learner's
own exporters (a response-ranking network whose item vectors sit around category centres,
as a catalog's do once item features and training shape them) and loaded through the
serving registry, checks included. Prints JSON lines (bench/report.py):

    .venv/bin/python bench/serve_catalog.py [--sizes 10000,100000,1000000]

One compute thread (onnxruntime and faiss), as a serving member beside a broker on two
cores runs; the figures are per call, batch 1 (one request) and batch 64 (per request).
A million items takes about 10 minutes (most of it exporting the snapshot) and 9 GB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from inference.registry import SnapshotRegistry
from learner.export import SnapshotExporter, check_parity, io_spec, sample_states
from learner.qnet import QNetwork
from learner.retrieval import RetrievalExporter, recall_at
from schemas.model_store import ModelStore
from schemas.reward import Reward

L, K, DIM = 10, 50, 64


def catalog_net(n_items: int) -> QNetwork:
    torch.manual_seed(0)
    net = QNetwork(n_items=n_items, dim=DIM, history_length=L, capacity=n_items)
    with torch.no_grad():
        centres = torch.randn(max(64, n_items // 500), DIM)
        which = torch.randint(0, centres.shape[0], (n_items,))
        net.item[:n_items] = centres[which] + 0.1 * torch.randn(n_items, DIM)
        net.response_item[:n_items] = 0.05 * torch.randn(n_items, DIM)
        net.response_bias[:n_items] = 0.1 * torch.randn(n_items)
        net.next_item_bias[:n_items] = 0.1 * torch.randn(n_items)
    return net.eval()


def timed(fn: object, calls: int) -> tuple[float, float]:
    """p50 and p99 of ``calls`` calls, ms (after 5 warm-up calls)."""
    for _ in range(5):
        fn()  # type: ignore[operator]
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1000)
    p50, p99 = np.percentile(samples, [50, 99])
    return float(p50), float(p99)


def measure(n_items: int, root: Path, calls: int) -> dict[str, float]:
    net = catalog_net(n_items)
    start = time.monotonic()
    model, policy = SnapshotExporter(K, "response").export(net, n_items)
    built = RetrievalExporter("response", candidates=256, min_recall=0.95).export(net, n_items)
    export_s = time.monotonic() - start
    ModelStore(root).write(
        model=model, item_ids=[f"sku-{i}" for i in range(n_items)], step=0, k=K,
        history_length=L, encoder="gru", reward=Reward(), io_spec=io_spec(L, K),
        ranking="response", parity=check_parity(model, policy, batch=8), metrics={},
        retrieval=(built.retrieval, built.files),
    )  # fmt: skip
    served = SnapshotRegistry(root, threads=1).scan()
    assert served is not None and served.candidates is not None
    r = built.retrieval
    common = {"items": n_items, "threads": 1, "index": r.kind, "nprobe": r.nprobe,
              "candidates": r.candidates}  # fmt: skip
    out: dict[str, float] = {}
    calls = max(30, calls * 10_000 // n_items)  # exact scoring of 1M items is slow
    for batch in (1, 64):
        items, events, ages = (t.numpy() for t in sample_states(batch, L, n_items, seed=batch))
        exclude = np.full((batch, 4), -1, np.int64)
        feeds = {"items": items, "events": events, "ages": ages, "exclude": exclude}
        exact = timed(lambda f=feeds: served.session.run(["indices", "scores"], f), calls)
        index = timed(lambda a=(items, events, ages, exclude): served.predict(*a), calls)
        per = 1 if batch == 1 else batch
        for name, (p50, p99) in (("exact", exact), ("index", index)):
            out[f"{name}_b{batch}_p50"], out[f"{name}_b{batch}_p99"] = p50 / per, p99 / per
        figure("serve_catalog", f"index_ms_per_request_b{batch}", index[0] / per, "ms",
               baseline="exact_in_graph", baseline_value=exact[0] / per,
               p99_ms=round(index[1] / per, 3), exact_p99_ms=round(exact[1] / per, 3),
               **common)  # fmt: skip
    # Recall on states the learner did not measure it on, at the recorded nprobe.
    items, events, ages = sample_states(512, L, n_items, seed=99)
    assert served.candidates.session is not None
    (queries,) = served.candidates.session.run(["query"], {"items": items.numpy(),
                                                           "events": events.numpy(),
                                                           "ages": ages.numpy()})  # fmt: skip
    recall = recall_at(served.candidates.index, served.candidates.vectors, queries,
                       served.candidates.candidates, 50)  # fmt: skip
    figure(
        "serve_catalog",
        "index_recall_at_50",
        recall,
        "share",
        learner_measured=round(built.retrieval.recall_at_50, 3),
        states=512,
        **common,
    )
    figure("serve_catalog", "export_s", export_s, "s", **common)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[10_000, 100_000, 1_000_000])  # fmt: skip
    parser.add_argument("--calls", type=int, default=200, help="timed calls at 10k items "
                        "(fewer above: 30 at a million)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    curve = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="recq-catalog-") as tmp:
            curve[n] = measure(n, Path(tmp), args.calls)
    smallest = min(curve)
    for n, figures in curve.items():
        for name in ("exact", "index"):
            figure("serve_catalog", f"{name}_b1_p99_ms_vs_smallest", figures[f"{name}_b1_p99"],
                   "ms", baseline=f"{name}_at_{smallest}",
                   baseline_value=curve[smallest][f"{name}_b1_p99"], items=n)  # fmt: skip


if __name__ == "__main__":
    main()
