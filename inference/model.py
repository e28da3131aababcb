"""One loaded snapshot: an onnxruntime session plus the catalog it scores, and for a
large catalog its candidate index (``inference.retrieval``), which then answers instead
of the in-graph top-K.

The provider is chosen from ``onnxruntime.get_available_providers()``: CUDA when the GPU
build sees a device, else CPU. Intra-op threads default to the machine's cores (one
session serves one process; micro-batching supplies the parallelism)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.retrieval import CandidateIndex
from schemas.manifest import (
    EXCLUDED_SCORE,
    INDEX_FILE,
    ITEM_VECTORS_FILE,
    OUTPUT_NAMES,
    QUERY_MODEL_FILE,
    SnapshotManifest,
)


def providers() -> list[str]:
    available = ort.get_available_providers()
    chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*chosen, "CPUExecutionProvider"]


@dataclass
class SnapshotModel:
    version: int
    path: Path
    manifest: SnapshotManifest
    item_ids: list[str]
    session: ort.InferenceSession
    k: int
    history_length: int
    index_of: dict[str, int] = field(default_factory=dict)
    candidates: CandidateIndex | None = None

    @classmethod
    def load(
        cls,
        path: Path,
        model: bytes,
        manifest: SnapshotManifest,
        item_ids: list[str],
        threads: int | None = None,
        files: dict[str, bytes] | None = None,
    ) -> SnapshotModel:
        """Build from a snapshot whose files were already read and verified against the
        manifest by the registry (the bytes given here are the ones verified; ``files``
        holds the retrieval files of a snapshot that has them). ``IndexInvalid`` when the
        retrieval files do not fit the manifest."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3
        # Idle pool threads sleep instead of spinning: between micro-batches the cores
        # belong to the Kafka client (and, on small machines, the broker).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(model, options, providers=providers())
        candidates = None
        if manifest.retrieval is not None:
            files = files or {}
            candidates = CandidateIndex(
                files[QUERY_MODEL_FILE], files[ITEM_VECTORS_FILE], files[INDEX_FILE],
                manifest.retrieval, manifest.n_items, options, providers(),
            )  # fmt: skip
        return cls(
            version=manifest.version,
            path=path,
            manifest=manifest,
            item_ids=item_ids,
            session=session,
            k=manifest.k,
            history_length=manifest.history_length,
            index_of={item: i for i, item in enumerate(item_ids)},
            candidates=candidates,
        )

    def predict(
        self, items: np.ndarray, events: np.ndarray, ages: np.ndarray, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-K indices and scores per row; excluded entries have score <= EXCLUDED/2."""
        if self.candidates is not None:
            return self.candidates.top_k(items, events, ages, exclude, self.k)
        indices, scores = self.session.run(
            list(OUTPUT_NAMES),
            {"items": items, "events": events, "ages": ages, "exclude": exclude},
        )
        return indices, scores


def live(scores: np.ndarray) -> np.ndarray:
    """Mask of top-K entries that are real candidates (not excluded, inside the catalog)."""
    return scores > EXCLUDED_SCORE / 2
