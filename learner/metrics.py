"""Learner metrics: Prometheus (process-wide) and TensorBoard scalars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

UPDATES = Counter("recq_learner_updates_total", "Gradient updates applied.")
TRANSITIONS_IN = Counter(
    "recq_learner_transitions_total", "Transitions consumed, by kind.", ["kind"]
)
SAMPLES_STORED = Counter("recq_learner_samples_total", "n-step samples written to replay.")
DEAD_LETTERS = Counter(
    "recq_learner_dead_letters_total", "Transitions dead-lettered, by reason code.", ["code"]
)
REPLAY_SIZE = Gauge("recq_learner_replay_size", "Samples held by the replay store.")
SLATES_STORED = Gauge("recq_learner_slates_size", "Slate transitions held by the slate store.")
UPDATES_PER_S = Gauge("recq_learner_updates_per_s", "Recent gradient updates per second.")
LOSS = Gauge("recq_learner_loss", "Most recent loss, by term (td, ce, slate, choice).", ["term"])
Q_MEAN = Gauge("recq_learner_q_mean", "Mean Q at the taken actions of the latest batch.")
CATALOG = Gauge("recq_learner_catalog_items", "Items the Q-network scores.")
SNAPSHOTS = Counter(
    "recq_learner_snapshots_total",
    "Snapshots, by result: written, then promoted, ope_rejected or unjudged (the gate); "
    "parity_failed, index_recall: not written.",
    ["result"],
)
SNAPSHOT_PROMOTED = Gauge(
    "recq_learner_snapshot_promoted_version", "Newest snapshot the gate let through."
)
GATE_SECONDS = Gauge("recq_learner_gate_seconds", "Time the gate took on the last snapshot.")
SNAPSHOT_VERSION = Gauge("recq_learner_snapshot_version", "Version of the newest snapshot.")
CONSUMER_LAG = Gauge(
    "recq_learner_consumer_lag", "Transitions not yet consumed, per partition.", ["partition"]
)


class TensorBoard:
    """``SummaryWriter`` when enabled, a no-op otherwise (tests, disabled by setting)."""

    def __init__(self, log_dir: Path | None) -> None:
        self._writer: Any = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is not None:
            for tag, value in values.items():
                self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
