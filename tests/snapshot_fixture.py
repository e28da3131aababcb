"""A small trained-looking policy exported through the learner's own code, so the
snapshots served here are exactly what the learner writes."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pytest
import torch

from learner.export import SnapshotExporter, check_parity, io_spec
from learner.qnet import QNetwork
from schemas.manifest import GateResult
from schemas.model_store import ModelStore, WrittenSnapshot
from schemas.reward import Reward

ITEMS = [f"sku-{i}" for i in range(40)]
L = 10


class WriteSnapshot(Protocol):
    def __call__(self, root: Path, gate: GateResult | None = None) -> WrittenSnapshot: ...


@pytest.fixture(scope="session")
def snapshot_writer() -> WriteSnapshot:
    torch.manual_seed(0)
    net = QNetwork(n_items=len(ITEMS), dim=8, history_length=L, capacity=64)
    exporter = SnapshotExporter(k=20)
    state = {"step": 0}

    def write(root: Path, gate: GateResult | None = None) -> WrittenSnapshot:
        with torch.no_grad():  # each snapshot a little different, like a learner's
            net.item.add_(torch.randn_like(net.item) * 0.05)
        model, policy = exporter.export(net, len(ITEMS))
        state["step"] += 10
        return ModelStore(root).write(
            model=model, item_ids=ITEMS, step=state["step"], k=policy.k, history_length=L,
            encoder="gru", reward=Reward(), io_spec=io_spec(L, policy.k),
            parity=check_parity(model, policy), metrics={}, gate=gate,
        )  # fmt: skip

    return write
