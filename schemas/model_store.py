"""The model store: ``snapshot-<version>/`` directories, each complete or absent.

A snapshot is written into a hidden temp directory in the store and renamed into place
(atomic on one filesystem), so a reader never sees a partial one. Layout:

    snapshot-000042/
        model.onnx        top-K policy (see learner/export.py)
        vocabulary.json   item ids by index ({"items": [...]}), the catalog it scores
        manifest.json     a ``schemas.manifest.SnapshotManifest``: version, step, the
                          sha256 and size of every file, what must match across
                          processes (history length, feature version, reward), parity
        query.onnx, item_vectors.npy, index.faiss
                          large catalogs only: candidate retrieval (manifest.retrieval)

The last ``keep`` snapshots are kept; older ones are pruned after a new one lands. The
learner writes; serving members and ``recq snapshots`` only read (torch-free).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from schemas.features import FEATURE_VERSION
from schemas.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    VOCABULARY_FILE,
    FileDigest,
    GateResult,
    ManifestError,
    Parity,
    Ranking,
    Retrieval,
    SnapshotManifest,
    TrainedThrough,
)
from schemas.reward import Reward

SNAPSHOT_RE = re.compile(r"^snapshot-(\d{6,})$")
#: The rollback pin: {"version": N, "by": "operator" | "guard", "reason": ...}.
PIN_FILE = "PINNED"


def snapshot_dirname(version: int) -> str:
    return f"snapshot-{version:06d}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class WrittenSnapshot:
    version: int
    path: Path
    manifest: SnapshotManifest


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = (SNAPSHOT_RE.match(p.name) for p in self.root.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, version: int) -> Path:
        return self.root / snapshot_dirname(version)

    def manifest(self, version: int) -> SnapshotManifest:
        """The version's manifest; ``ManifestError`` when it is not a valid one."""
        return SnapshotManifest.parse((self.path(version) / MANIFEST_FILE).read_bytes())

    # --- the pin ------------------------------------------------------------------------
    def pin_record(self) -> dict[str, Any] | None:
        try:
            record = orjson.loads((self.root / PIN_FILE).read_bytes())
            int(record["version"])
        except (FileNotFoundError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def pinned(self) -> int | None:
        record = self.pin_record()
        return None if record is None else int(record["version"])

    def pin(self, version: int, *, by: str = "operator", reason: str = "") -> None:
        """Pin every serving member to ``version`` (atomic replace)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{PIN_FILE}.tmp-{os.getpid()}"
        tmp.write_bytes(orjson.dumps({"version": version, "by": by, "reason": reason}))
        tmp.replace(self.root / PIN_FILE)

    def unpin(self) -> None:
        (self.root / PIN_FILE).unlink(missing_ok=True)

    def serving_version(self) -> int | None:
        """What members serve when they follow the store: the pinned version, else the
        newest snapshot the gate let through (None: popularity)."""
        pinned = self.pinned()
        if pinned is not None and pinned in self.versions():
            return pinned
        for version in sorted(self.versions(), reverse=True):
            try:
                if self.manifest(version).servable:
                    return version
            except (OSError, ManifestError):
                continue
        return None

    def write(
        self,
        *,
        model: bytes,
        item_ids: list[str],
        step: int,
        k: int,
        history_length: int,
        encoder: str,
        reward: Reward,
        io_spec: dict[str, Any],
        ranking: Ranking = "q",
        parity: Parity,
        metrics: dict[str, float],
        gate: GateResult | None = None,
        trained_through: TrainedThrough | None = None,
        retrieval: tuple[Retrieval, dict[str, bytes]] | None = None,
    ) -> WrittenSnapshot:
        """Write the next version atomically and return it (``retrieval``: the manifest
        entry and the files of a candidate index)."""
        self.root.mkdir(parents=True, exist_ok=True)
        version = max(self.versions(), default=0) + 1
        vocabulary = orjson.dumps({"items": item_ids})
        extra = retrieval[1] if retrieval else {}
        manifest = SnapshotManifest(
            version=version,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            created_ts_ms=int(time.time() * 1000),
            step=step,
            files={
                MODEL_FILE: FileDigest(sha256=sha256_of(model), bytes=len(model)),
                VOCABULARY_FILE: FileDigest(sha256=sha256_of(vocabulary), bytes=len(vocabulary)),
                **{
                    name: FileDigest(sha256=sha256_of(d), bytes=len(d)) for name, d in extra.items()
                },
            },
            n_items=len(item_ids),
            k=k,
            history_length=history_length,
            feature_version=FEATURE_VERSION,
            reward=reward.as_dict(),
            encoder=encoder,
            ranking=ranking,
            io=io_spec,
            parity=parity,
            metrics=metrics,
            gate=gate,
            trained_through=trained_through,
            retrieval=retrieval[0] if retrieval else None,
        )
        tmp = self.root / f".tmp-{snapshot_dirname(version)}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, data in (
            (MODEL_FILE, model),
            (VOCABULARY_FILE, vocabulary),
            *extra.items(),
            (MANIFEST_FILE, manifest.to_json()),
        ):
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        final = self.path(version)
        os.rename(tmp, final)  # atomic: readers see all of it or none of it
        _fsync_dir(self.root)
        return WrittenSnapshot(version, final, manifest)

    def prune(self, keep: int) -> list[int]:
        """Remove all but the newest ``keep`` snapshots, never the one members serve
        (pinned, or the newest the gate let through: after a run of rejections it may be
        older than the newest ``keep``); returns the removed versions."""
        versions = self.versions()
        protected = self.serving_version()
        removed = [v for v in (versions[:-keep] if keep > 0 else versions) if v != protected]
        for version in removed:
            # Rename first so a reader never meets a half-deleted directory.
            doomed = self.root / f".del-{snapshot_dirname(version)}-{os.getpid()}"
            os.rename(self.path(version), doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        return removed

    def clean_temp(self) -> None:
        """Remove leftovers of a writer that died mid-snapshot."""
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith((".tmp-", ".del-")):
                    shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
