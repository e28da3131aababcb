"""When the trainer writes snapshots: every N updates or T seconds, never before the
minimum number of updates (until then serving answers with popularity)."""

from __future__ import annotations

from learner.trainer import snapshot_due
from schemas.settings import LearnerSettings


def test_no_snapshot_before_the_minimum_updates_then_every_n_or_t() -> None:
    cfg = LearnerSettings(
        snapshot_every_updates=100, snapshot_every_s=5.0, snapshot_min_updates=300
    )
    assert not snapshot_due(cfg, updates=299, since_last=299, seconds=60.0)
    assert snapshot_due(cfg, updates=300, since_last=300, seconds=0.0)
    assert not snapshot_due(cfg, updates=350, since_last=50, seconds=4.9)
    assert snapshot_due(cfg, updates=350, since_last=50, seconds=5.0)
    assert snapshot_due(cfg, updates=400, since_last=100, seconds=0.1)
