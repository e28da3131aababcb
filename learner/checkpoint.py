"""Learner checkpoints: weights (online and target), optimizer state, update count and
the transitions-topic offsets they reflect. Written through a temp file and a rename;
loaded with ``weights_only=True`` (no pickled code runs on load)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learner.dqn import DQN
from schemas.features import FEATURE_VERSION

CHECKPOINT_FILE = "checkpoint.pt"
#: 2: the network has the choice model's parameters; 3: and the response model's.
CHECKPOINT_FORMAT = 3


@dataclass(frozen=True)
class Checkpoint:
    updates: int
    offsets: dict[int, int]  # transitions partition -> next offset to read
    n_items: int
    capacity: int


def save(path: Path, dqn: DQN, offsets: dict[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "feature_version": FEATURE_VERSION,
            "updates": dqn.updates,
            "offsets": {int(p): int(o) for p, o in offsets.items()},
            "n_items": dqn.online.n_items,
            "capacity": dqn.online.capacity,
            "online": dqn.online.state_dict(),
            "target": dqn.target.state_dict(),
            "optimizer": dqn.optimizer.state_dict(),
            "row_optimizer": dqn.row_optimizer.state_dict(),
        },
        tmp,
    )
    os.replace(tmp, path)


def peek(path: Path) -> Checkpoint | None:
    """The checkpoint's bookkeeping (None when there is none)."""
    data = _load(path)
    if data is None:
        return None
    return Checkpoint(data["updates"], data["offsets"], data["n_items"], data["capacity"])


def restore(path: Path, dqn: DQN) -> Checkpoint | None:
    """Load a checkpoint into ``dqn`` (grown to the checkpoint's catalog first)."""
    data = _load(path)
    if data is None:
        return None
    if data.get("feature_version", 1) != FEATURE_VERSION:
        raise RuntimeError(
            f"checkpoint {path} was trained on feature version {data.get('feature_version', 1)}"
            f", this build encodes states with version {FEATURE_VERSION} (schemas/features.py)"
            ": delete it (and the model store) to start fresh"
        )
    if data.get("format", 1) != CHECKPOINT_FORMAT:
        raise RuntimeError(
            f"checkpoint {path} has format {data.get('format', 1)}, this build writes "
            f"{CHECKPOINT_FORMAT} (the network gained the response model): delete it to start fresh"
        )
    dqn.ensure_items(data["n_items"])
    if dqn.online.capacity != data["capacity"]:
        raise RuntimeError(
            f"checkpoint {path} has {data['capacity']} item rows, the network "
            f"{dqn.online.capacity}: delete it to start fresh, or restore with the same settings"
        )
    dqn.online.load_state_dict(data["online"])
    dqn.target.load_state_dict(data["target"])
    dqn.optimizer.load_state_dict(data["optimizer"])
    dqn.row_optimizer.load_state_dict(data["row_optimizer"])
    dqn.updates = int(data["updates"])
    dqn.refresh_selection()
    return Checkpoint(data["updates"], data["offsets"], data["n_items"], data["capacity"])


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return data
