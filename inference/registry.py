"""Snapshot registry: which verified snapshot serves, swapped atomically.

A candidate (found in the model store at start, announced on ``snapshots``, or named by
a rollback) is verified off the serving path: its directory must be inside the model
store, its manifest must be a valid ``SnapshotManifest`` with a feature version this
build encodes states for, every file the manifest lists must have the listed size and
sha256 (model.onnx also the announcement's), the vocabulary must name ``n_items`` items,
the model's inputs and outputs must match the contract, a candidate index (large
catalogs) must have the manifest's dimensions and item count, and a smoke inference
(through the index where there is one) must return [2, K] finite scores and indices
inside its catalog. Only then does ``current``
point at it; a request already running keeps the model object it started with. A bad snapshot is
rejected with a logged reason and ``recq_serve_snapshot_rejections_total{reason}``, and
the current one keeps serving.

Only snapshots the learner's off-policy gate let through are swapped in (the manifest's
``gate``; one it rejected stays on disk and is skipped, counted as ``not_promoted``).

``recq snapshots rollback VERSION`` (or the learner's online guard) writes ``PINNED`` in
the model store; every registry serves that version (if it verifies, promoted or not)
until the pin is removed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from prometheus_client import Counter, Gauge

from inference.model import SnapshotModel, live
from inference.retrieval import IndexInvalid
from schemas.features import FEATURE_VERSION
from schemas.manifest import (
    INPUT_NAMES,
    MANIFEST_FILE,
    MODEL_FILE,
    OUTPUT_NAMES,
    VOCABULARY_FILE,
    ManifestError,
    SnapshotManifest,
)
from schemas.model_store import PIN_FILE, ModelStore

log = logging.getLogger("recq.serve")

__all__ = ["PIN_FILE", "SnapshotRegistry", "SnapshotRejected"]
REJECTIONS = Counter(
    "recq_serve_snapshot_rejections_total", "Snapshots refused, by reason.", ["reason"]
)
SWAPS = Counter("recq_serve_snapshot_swaps_total", "Snapshots swapped in.")
SERVING_VERSION = Gauge("recq_serve_snapshot_version", "Version now serving (0: popularity).")


class SnapshotRejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class SnapshotRegistry:
    def __init__(self, root: Path, threads: int | None = None) -> None:
        self.store = ModelStore(root)
        self.root = root
        self.threads = threads
        self._current: SnapshotModel | None = None
        self._swap = threading.Lock()
        self.rejected: dict[int, str] = {}
        #: Called (on the swapping thread) with each snapshot swapped in: freshness.
        self.on_swap: Callable[[SnapshotModel], object] | None = None

    @property
    def current(self) -> SnapshotModel | None:
        return self._current  # one reference read: atomic under the GIL

    def pinned(self) -> int | None:
        return self.store.pinned()

    # --- verification -----------------------------------------------------------------
    def verify(self, relative: str, expected_sha256: str | None = None) -> SnapshotModel:
        root = self.root.resolve()
        path = (self.root / relative).resolve()
        if not path.is_relative_to(root) or path == root:
            raise SnapshotRejected("outside_store", f"{relative} is not inside {root}")
        try:
            manifest = SnapshotManifest.parse((path / MANIFEST_FILE).read_bytes())
            files = {name: (path / name).read_bytes() for name in manifest.files}
        except ManifestError as exc:
            raise SnapshotRejected("invalid_manifest", f"{relative}: {exc}") from None
        except OSError as exc:
            raise SnapshotRejected("unreadable", f"{relative}: {exc}") from None
        if manifest.feature_version != FEATURE_VERSION:
            raise SnapshotRejected(
                "feature_version",
                f"{relative}: trained on feature version {manifest.feature_version}; this "
                f"build encodes states with version {FEATURE_VERSION} (schemas/features.py)",
            )
        for name, data in files.items():
            listed = manifest.files[name]
            digest = hashlib.sha256(data).hexdigest()
            if digest != listed.sha256 or len(data) != listed.bytes:
                raise SnapshotRejected(
                    "hash_mismatch",
                    f"{relative}/{name}: sha256 {digest} ({len(data)} bytes), "
                    f"manifest says {listed.sha256} ({listed.bytes} bytes)",
                )
        if expected_sha256 is not None and expected_sha256 != manifest.model_sha256:
            raise SnapshotRejected(
                "hash_mismatch",
                f"{relative}: announced sha256 {expected_sha256} != {manifest.model_sha256}",
            )
        try:
            item_ids = orjson.loads(files[VOCABULARY_FILE])["items"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise SnapshotRejected("unreadable", f"{relative}/{VOCABULARY_FILE}: {exc}") from None
        if not isinstance(item_ids, list) or len(item_ids) != manifest.n_items:
            raise SnapshotRejected(
                "wrong_shapes", f"{relative}: vocabulary does not name n_items={manifest.n_items}"
            )
        try:
            candidate = SnapshotModel.load(
                path, files[MODEL_FILE], manifest, item_ids, self.threads, files
            )
        except IndexInvalid as exc:
            raise SnapshotRejected("invalid_index", f"{relative}: {exc}") from None
        except Exception as exc:  # onnxruntime refuses a truncated / corrupt graph
            raise SnapshotRejected("invalid_model", f"{relative}: {exc}") from None
        self._check_io(candidate, relative)
        self._smoke(candidate, relative)
        return candidate

    def _check_io(self, m: SnapshotModel, relative: str) -> None:
        inputs = {i.name: (i.type, i.shape) for i in m.session.get_inputs()}
        outputs = {o.name: (o.type, o.shape) for o in m.session.get_outputs()}
        problems = []
        if set(inputs) != set(INPUT_NAMES) or set(outputs) != set(OUTPUT_NAMES):
            problems.append(f"inputs {sorted(inputs)} outputs {sorted(outputs)}")
        else:
            for name in ("items", "events", "ages"):
                kind, shape = inputs[name]
                if kind != "tensor(int64)" or len(shape) != 2 or shape[1] != m.history_length:
                    problems.append(
                        f"{name} is {kind} {shape}, want int64 [batch, {m.history_length}]"
                    )
            if inputs["exclude"][0] != "tensor(int64)" or len(inputs["exclude"][1]) != 2:
                problems.append(f"exclude is {inputs['exclude']}")
            if outputs["indices"][0] != "tensor(int64)" or outputs["scores"][0] != "tensor(float)":
                problems.append(f"outputs are {outputs}")
        if problems:
            raise SnapshotRejected("wrong_shapes", f"{relative}: " + "; ".join(problems))

    def _smoke(self, m: SnapshotModel, relative: str) -> None:
        length = m.history_length
        items = np.zeros((2, length), np.int64)
        events = np.zeros((2, length), np.int64)
        items[1, -1], events[1, -1] = 0, 1
        try:
            indices, scores = m.predict(items, events, events.copy(), np.full((2, 1), -1, np.int64))
        except Exception as exc:
            raise SnapshotRejected("smoke_failed", f"{relative}: {exc}") from None
        k = min(m.k, max(1, len(m.item_ids)))
        if indices.shape[0] != 2 or scores.shape != indices.shape or indices.shape[1] < k:
            raise SnapshotRejected(
                "wrong_shapes", f"{relative}: outputs {indices.shape} {scores.shape}"
            )
        if not np.isfinite(scores).all() or (indices[live(scores)] >= len(m.item_ids)).any():
            raise SnapshotRejected(
                "smoke_failed", f"{relative}: non-finite scores or unknown items"
            )

    # --- swapping ---------------------------------------------------------------------
    def offer(self, version: int, relative: str, sha256: str | None = None) -> bool:
        """Verify and, if it is the one to serve, swap it in. False if rejected or older."""
        pinned = self.pinned()
        current = self._current
        if pinned is not None and version != pinned:
            return False
        if pinned is None and current is not None and version <= current.version:
            return False
        try:
            candidate = self.verify(relative, sha256)
        except SnapshotRejected as exc:
            REJECTIONS.labels(exc.reason).inc()
            self.rejected[version] = str(exc)
            log.error("snapshot %d rejected: %s", version, exc)
            return False
        if pinned is None and not candidate.manifest.servable:
            # The learner kept it on disk for people to inspect; not an error here.
            if version not in self.rejected:
                REJECTIONS.labels("not_promoted").inc()
                gate = candidate.manifest.gate
                self.rejected[version] = f"not promoted by the gate: {gate.reason if gate else ''}"
                log.info("snapshot %d skipped: %s", version, self.rejected[version])
            return False
        with self._swap:
            current = self._current
            newer = current is None or candidate.version > current.version
            if pinned is not None or newer:
                self._current = candidate
                SWAPS.inc()
                SERVING_VERSION.set(candidate.version)
                log.info("serving snapshot %d", candidate.version)
                if self.on_swap is not None:
                    self.on_swap(candidate)
                return True
        return False

    def scan(self) -> SnapshotModel | None:
        """At start (and when a pin changes): the pinned version, else the newest that
        verifies, walking back past rejected ones."""
        pinned = self.pinned()
        versions = [pinned] if pinned is not None else sorted(self.store.versions(), reverse=True)
        for version in versions:
            if pinned is not None and self._current is not None and self._current.version == pinned:
                return self._current
            if pinned is None and self._current is not None and version <= self._current.version:
                break
            if self.offer(version, self.store.path(version).name):
                break
        return self._current

    def follow_pin(self) -> None:
        """Honour a pin written or removed since the last look (called periodically)."""
        pinned = self.pinned()
        current = self._current
        if pinned is not None and (current is None or current.version != pinned):
            self.offer(pinned, self.store.path(pinned).name)
        elif pinned is None and current is not None:
            newest = max(self.store.versions(), default=0)
            if newest > current.version:
                self.scan()
