"""Serving a snapshot through its candidate index (``schemas.manifest.Retrieval``,
built by ``learner.retrieval``): the query graph turns each state into a vector, the
faiss index proposes ``candidates`` items, and those are scored exactly (query . vector,
the snapshot's own score), filtered and cut to the top K. The answer has the in-graph
top-K's shape and meaning, so everything after it (exploration, records) is unchanged."""

from __future__ import annotations

import contextlib
import io

import faiss
import numpy as np
import onnxruntime as ort

from schemas.manifest import QUERY_INPUT_NAMES, QUERY_OUTPUT, Retrieval
from schemas.retrieval import rank_candidates


class IndexInvalid(ValueError):
    """The snapshot's retrieval files do not fit its manifest; the message says how."""


class CandidateIndex:
    def __init__(
        self,
        query_model: bytes,
        vectors: bytes,
        index: bytes,
        retrieval: Retrieval,
        n_items: int,
        options: ort.SessionOptions,
        providers: list[str],
    ) -> None:
        self.retrieval = retrieval
        self.candidates = min(retrieval.candidates, n_items)
        try:
            self.vectors = np.load(io.BytesIO(vectors), allow_pickle=False)
            self.index = faiss.deserialize_index(np.frombuffer(index, dtype=np.uint8))
        except Exception as exc:  # faiss raises RuntimeError, numpy ValueError / OSError
            raise IndexInvalid(f"unreadable index or vectors: {exc}") from None
        want = (n_items, retrieval.dim)
        if self.vectors.dtype != np.float32 or self.vectors.shape != want:
            raise IndexInvalid(f"item vectors {self.vectors.dtype} {self.vectors.shape}, want "
                               f"float32 {want}")  # fmt: skip
        if self.index.d != retrieval.dim or self.index.ntotal != n_items:
            raise IndexInvalid(f"index of {self.index.ntotal} x {self.index.d}, want "
                               f"{n_items} x {retrieval.dim}")  # fmt: skip
        with contextlib.suppress(RuntimeError):  # not an IVF index: nothing to tune
            faiss.extract_index_ivf(self.index).nprobe = retrieval.nprobe
        # One faiss thread (process-wide): a micro-batch is a few queries, and OpenMP's
        # idle workers spin after each search, CPU the Kafka clients and the broker need
        # (with 2, a member spent 2.2 ms of CPU per request at 500 req/s against 1.9 for
        # the exact in-graph top-K: bench/serve.py).
        faiss.omp_set_num_threads(1)
        self.session = ort.InferenceSession(query_model, options, providers=providers)
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        inputs = {i.name for i in self.session.get_inputs()}
        if inputs != set(QUERY_INPUT_NAMES) or list(outputs) != [QUERY_OUTPUT]:
            raise IndexInvalid(f"query graph takes {sorted(inputs)}, gives {sorted(outputs)}")

    def top_k(
        self, items: np.ndarray, events: np.ndarray, ages: np.ndarray, exclude: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (indices int64, scores float32) per row, by ``rank_candidates``."""
        (query,) = self.session.run([QUERY_OUTPUT],
                                    {"items": items, "events": events, "ages": ages})  # fmt: skip
        query = np.ascontiguousarray(query, dtype=np.float32)
        _, found = self.index.search(query, self.candidates)
        return rank_candidates(query, self.vectors, found, exclude, k)
