"""The registry serves only verified snapshots: each kind of bad snapshot is rejected
with its reason while the current one keeps serving; pins roll back and forward."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from inference.registry import PIN_FILE, REJECTIONS, SnapshotRegistry
from schemas.manifest import MANIFEST_FILE, MODEL_FILE, VOCABULARY_FILE, GateResult
from tests.snapshot_fixture import WriteSnapshot


def rejected(reason: str) -> float:
    return REJECTIONS.labels(reason)._value.get()


def test_scan_serves_the_newest_and_swaps_forward(
    tmp_path: Path, snapshot_writer: WriteSnapshot
) -> None:
    snapshot_writer(tmp_path)
    second = snapshot_writer(tmp_path)
    registry = SnapshotRegistry(tmp_path)
    model = registry.scan()
    assert model is not None and model.version == second.version == 2
    third = snapshot_writer(tmp_path)
    assert registry.offer(third.version, third.path.name, third.manifest.model_sha256)
    assert registry.current is not None and registry.current.version == 3
    assert not registry.offer(2, second.path.name)  # never backwards without a pin
    held = registry.current
    assert held is not None and held.version == 3


@pytest.mark.parametrize(
    "damage",
    ["truncated", "wrong_hash", "announced_hash", "wrong_shapes", "outside", "vocabulary",
     "feature_version", "not_a_manifest", "vocabulary_size"],
)  # fmt: skip
def test_bad_snapshots_are_rejected_and_serving_continues(
    tmp_path: Path, snapshot_writer: WriteSnapshot, damage: str
) -> None:
    good = snapshot_writer(tmp_path)
    registry = SnapshotRegistry(tmp_path)
    assert registry.scan() is not None
    bad = snapshot_writer(tmp_path)
    model_file = bad.path / MODEL_FILE
    sha = None
    expected_reason = {"truncated": "hash_mismatch", "wrong_hash": "hash_mismatch",
                       "announced_hash": "hash_mismatch", "wrong_shapes": "wrong_shapes",
                       "outside": "outside_store", "vocabulary": "hash_mismatch",
                       "feature_version": "feature_version",
                       "not_a_manifest": "invalid_manifest",
                       "vocabulary_size": "wrong_shapes"}[damage]  # fmt: skip
    relative = bad.path.name
    manifest = orjson.loads((bad.path / MANIFEST_FILE).read_bytes())
    if damage == "truncated":
        model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    elif damage == "wrong_hash":
        manifest["files"][MODEL_FILE]["sha256"] = "0" * 64
        (bad.path / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    elif damage == "vocabulary":
        # Same length, two items swapped: every index would name the wrong item.
        vocabulary = bad.path / VOCABULARY_FILE
        items = orjson.loads(vocabulary.read_bytes())["items"]
        items[0], items[1] = items[1], items[0]
        vocabulary.write_bytes(orjson.dumps({"items": items}))
    elif damage == "feature_version":
        manifest["feature_version"] = 1  # trained before cart removals had a code
        (bad.path / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    elif damage == "not_a_manifest":
        del manifest["history_length"]
        manifest["sha256"] = manifest["files"][MODEL_FILE]["sha256"]  # the old layout
        (bad.path / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    elif damage == "vocabulary_size":
        manifest["n_items"] += 1
        (bad.path / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    elif damage == "announced_hash":
        sha = "f" * 64
    elif damage == "wrong_shapes":
        manifest["history_length"] = 7  # the graph takes 10
        (bad.path / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    else:
        outside = tmp_path.parent / f"elsewhere-{tmp_path.name}"
        shutil.copytree(bad.path, outside)
        relative = f"../{outside.name}"
    before = rejected(expected_reason)
    assert not registry.offer(bad.version, relative, sha)
    assert rejected(expected_reason) == before + 1
    assert expected_reason in registry.rejected[bad.version]
    current = registry.current
    assert current is not None and current.version == good.version  # still serving


def test_a_truncated_model_with_a_matching_manifest_fails_to_load(
    tmp_path: Path, snapshot_writer: WriteSnapshot
) -> None:
    """Hash checks pass when the manifest was written for the damaged bytes: onnxruntime
    still refuses it, and the registry says so."""
    import hashlib

    bad = snapshot_writer(tmp_path)
    model_file = bad.path / MODEL_FILE
    model_file.write_bytes(model_file.read_bytes()[:1000])
    manifest = orjson.loads((bad.path / MANIFEST_FILE).read_bytes())
    manifest["files"][MODEL_FILE] = {
        "sha256": hashlib.sha256(model_file.read_bytes()).hexdigest(),
        "bytes": 1000,
    }
    (bad.path / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    registry = SnapshotRegistry(tmp_path)
    assert registry.scan() is None
    assert "invalid_model" in registry.rejected[bad.version]


def test_pin_rolls_back_and_clearing_it_rolls_forward(
    tmp_path: Path, snapshot_writer: WriteSnapshot
) -> None:
    for _ in range(3):
        snapshot_writer(tmp_path)
    registry = SnapshotRegistry(tmp_path)
    assert registry.scan() is not None and registry.current is not None
    assert registry.current.version == 3
    (tmp_path / PIN_FILE).write_bytes(orjson.dumps({"version": 1}))
    registry.follow_pin()
    assert registry.current.version == 1
    assert not registry.offer(4, "snapshot-000004")  # pinned: newer ones wait
    (tmp_path / PIN_FILE).unlink()
    registry.follow_pin()
    assert registry.current.version == 3


def test_only_snapshots_the_gate_let_through_are_served_unless_pinned(
    tmp_path: Path, snapshot_writer: WriteSnapshot
) -> None:
    promoted = snapshot_writer(tmp_path, GateResult(decision="promoted", against="logging"))
    snapshot_writer(tmp_path, GateResult(decision="rejected", reason="worse"))
    registry = SnapshotRegistry(tmp_path)
    before = rejected("not_promoted")
    model = registry.scan()  # walks back past the rejected one
    assert model is not None and model.version == promoted.version == 1
    assert not registry.offer(2, "snapshot-000002")
    assert rejected("not_promoted") == before + 1  # counted once, however often offered
    assert "not promoted by the gate: worse" in registry.rejected[2]
    unjudged = snapshot_writer(tmp_path, GateResult(decision="unjudged"))
    assert registry.offer(unjudged.version, unjudged.path.name)
    registry.store.pin(2, by="operator")  # a person may still serve it on purpose
    registry.follow_pin()
    assert registry.current is not None and registry.current.version == 2


def test_pruning_never_removes_the_snapshot_members_serve(
    tmp_path: Path, snapshot_writer: WriteSnapshot
) -> None:
    snapshot_writer(tmp_path, GateResult(decision="promoted"))
    for _ in range(6):
        snapshot_writer(tmp_path, GateResult(decision="rejected"))
    store = SnapshotRegistry(tmp_path).store
    assert store.serving_version() == 1
    assert store.prune(3) == [2, 3, 4]
    assert store.versions() == [1, 5, 6, 7]
    store.pin(6, by="guard")
    assert store.serving_version() == 6
    assert store.prune(1) == [1, 5]
    assert store.versions() == [6, 7]
