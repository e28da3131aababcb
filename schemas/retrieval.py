"""How a snapshot's candidate index is served, the rule the learner measures recall of
and serving applies (``schemas.manifest.Retrieval``): the index's candidates are scored
exactly (query . vector, the snapshot's own score), excluded and missing ones score
``EXCLUDED_SCORE``, and the best ``k`` are kept, padded like an in-graph top-K wider
than the catalog. numpy only: the index search itself is the caller's (faiss)."""

from __future__ import annotations

import numpy as np

from schemas.manifest import EXCLUDED_SCORE


def rank_candidates(
    queries: np.ndarray, vectors: np.ndarray, found: np.ndarray, exclude: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (indices int64, scores float32) per row of ``found`` (candidate indices
    [B, C], -1 for none) for ``queries`` [B, dim]; ``exclude`` [B, X] item indices never
    ranked (-1: none; X may be 0)."""
    safe = np.maximum(found, 0)
    scores = np.einsum("bd,bcd->bc", queries, vectors[safe])
    dropped = found < 0
    if exclude.shape[1]:
        dropped |= (found[:, :, None] == exclude[:, None, :]).any(-1)
    scores[dropped] = EXCLUDED_SCORE
    width = min(k, found.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :width]
    indices = np.take_along_axis(safe, order, 1).astype(np.int64)
    top = np.take_along_axis(scores, order, 1).astype(np.float32)
    if width < k:
        pad = ((0, 0), (0, k - width))
        indices = np.pad(indices, pad)
        top = np.pad(top, pad, constant_values=EXCLUDED_SCORE)
    return indices, top
