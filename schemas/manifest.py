"""The snapshot contract: what a snapshot directory holds and what its manifest says.

The learner writes ``manifest.json`` as a ``SnapshotManifest``; the serving registry and
``recq snapshots`` read it back through ``SnapshotManifest.parse`` and nothing else. It
carries what must match across processes: the history length and feature version the
model reads states with (``schemas.features``), the reward it was trained for
(``schemas.reward``), and the sha256 and size of every file in the directory, the
vocabulary (index -> item id) included. A reader verifies every listed file and refuses
a feature version it does not understand.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: What a snapshot ranks by (``RECQ_RANKING``; ``learner.export``).
Ranking = Literal["q", "slateq", "response", "next_item"]

#: Version of this record's layout (not of the model).
MANIFEST_SCHEMA_VERSION: Literal[1] = 1

MODEL_FILE = "model.onnx"
VOCABULARY_FILE = "vocabulary.json"
MANIFEST_FILE = "manifest.json"
#: Files every snapshot has; the manifest lists each with its digest.
REQUIRED_FILES = (MODEL_FILE, VOCABULARY_FILE)
#: Candidate retrieval (large catalogs, ``Retrieval``): the state -> query graph, the item
#: vectors it is scored against (float32 [n_items, dim], .npy) and the faiss index over
#: them (``faiss.serialize_index``).
QUERY_MODEL_FILE = "query.onnx"
ITEM_VECTORS_FILE = "item_vectors.npy"
INDEX_FILE = "index.faiss"
RETRIEVAL_FILES = (QUERY_MODEL_FILE, ITEM_VECTORS_FILE, INDEX_FILE)
#: query.onnx's inputs (int64 [batch, L]) and output (float32 [batch, dim]).
QUERY_INPUT_NAMES = ("items", "events", "ages")
QUERY_OUTPUT = "query"

#: The model's inputs (int64; items / events / ages [batch, L], exclude [batch, X]) and
#: outputs (indices int64 [batch, K], scores float32 [batch, K]).
INPUT_NAMES = ("items", "events", "ages", "exclude")
OUTPUT_NAMES = ("indices", "scores")
#: Score of an excluded item (and of top-K padding past the catalog): finite, so parity
#: checks can compare it, and far below any real Q-value.
EXCLUDED_SCORE = -1e30


class ManifestError(ValueError):
    """A manifest that is not a valid ``SnapshotManifest``; the message says why."""


class FileDigest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Parity(BaseModel):
    """ONNX vs torch on a sample batch, measured before the snapshot was written."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    batch: int = Field(ge=1)
    topk_equal: float = Field(ge=0.0, le=1.0, description="Rows with identical top-K lists.")
    max_abs_diff: float = Field(ge=0.0, description="Largest |score difference| in the top-K.")


GateDecision = Literal["promoted", "rejected", "unjudged", "off"]
#: Decisions under which serving members may swap a snapshot in.
SERVABLE: frozenset[str] = frozenset({"promoted", "unjudged", "off"})


class GateResult(BaseModel):
    """What the off-policy gate (learner/gate.py) said about a snapshot before it was
    announced. Values are estimated reward per slate on the same recent logged slates;
    ``low``/``high`` bound (candidate - current) at the gate's confidence level."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    decision: GateDecision
    reason: str = Field(default="", description="Why, in words (also logged).")
    against: str = Field(
        default="", description="The snapshot version judged against, or 'logging'."
    )
    slates: int = Field(default=0, ge=0, description="Logged slates it was judged on.")
    slots: int = Field(default=0, ge=0, description="Leading slots compared (supported).")
    estimator: str = ""
    candidate: float | None = None
    current: float | None = None
    low: float | None = None
    high: float | None = None
    margin: float | None = Field(default=None, description="Tolerated loss, reward per slate.")

    @property
    def servable(self) -> bool:
        return self.decision in SERVABLE


class Retrieval(BaseModel):
    """How a snapshot with a candidate index is served: the score of item a for state s
    is query(s) . item_vectors[a] exactly (the in-graph ranking's score, biases folded
    in); the index proposes ``candidates`` items per state, those are scored exactly,
    filtered, and the top K kept. Measured by the learner before writing."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    dim: int = Field(ge=1, description="Width of the query and item vectors.")
    kind: str = Field(description="faiss index factory string, e.g. IVF1024,Flat.")
    nprobe: int = Field(ge=1, description="IVF lists searched per query.")
    candidates: int = Field(ge=1, description="Items the index proposes per state.")
    recall_at_50: float = Field(
        ge=0.0, le=1.0, description="Top-50 overlap with exact scoring on sampled states."
    )
    states: int = Field(ge=1, description="States the recall was measured on.")
    score_max_abs_diff: float = Field(
        ge=0.0, description="|query . vector - the torch ranking score|, largest on the sample."
    )


class TrainedThrough(BaseModel):
    """The newest transitions in the replay and slate stores when the snapshot was
    exported: what it could have trained on (freshness, docs/serving.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    offsets: dict[str, int] = Field(
        description="Transitions-topic partition -> next offset the learner had read."
    )
    event_ts_ms: int = Field(ge=0, description="Newest transition event time read (ms).")


class SnapshotManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    schema_version: Literal[1] = MANIFEST_SCHEMA_VERSION
    version: int = Field(ge=1, description="Snapshot version: increases by one per write.")
    created_at: str = Field(description="UTC, ISO 8601.")
    created_ts_ms: int = Field(ge=0)
    step: int = Field(ge=0, description="Learner updates done when it was exported.")
    files: dict[str, FileDigest] = Field(description="Every file of the snapshot but this one.")
    n_items: int = Field(ge=1, description="Catalog size: entries of vocabulary.json.")
    k: int = Field(ge=1, description="K of the in-graph top-K.")
    history_length: int = Field(ge=1, description="L: interactions per state row.")
    feature_version: int = Field(ge=1, description="schemas.features.FEATURE_VERSION.")
    reward: dict[str, float] = Field(description="schemas.reward.Reward it was trained for.")
    encoder: str
    ranking: Ranking = Field(
        default="q",
        description="What scores mean: Q(s, a); exp(v(s, a) - max v) x Q(s, a) (SlateQ); or "
        "the response model's logit of the expected reward of showing a, up to a per-state "
        "constant (response); the supervised head's next-item logit (next_item).",
    )
    io: dict[str, Any] = Field(description="Inputs and outputs of model.onnx, for people.")
    parity: Parity
    metrics: dict[str, float] = Field(description="Training figures at export.")
    gate: GateResult | None = Field(
        default=None, description="The off-policy gate's decision (None: written before it)."
    )
    trained_through: TrainedThrough | None = None
    retrieval: Retrieval | None = Field(
        default=None, description="Candidate index (large catalogs); None: in-graph top-K."
    )

    @property
    def servable(self) -> bool:
        """May a serving member swap to it without a pin (the gate promoted it)?"""
        return self.gate is None or self.gate.servable

    @property
    def model_sha256(self) -> str:
        return self.files[MODEL_FILE].sha256

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def parse(cls, raw: bytes) -> SnapshotManifest:
        try:
            manifest = cls.model_validate_json(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ManifestError(f"invalid manifest: {problems}") from None
        required = REQUIRED_FILES + (RETRIEVAL_FILES if manifest.retrieval else ())
        missing = [name for name in required if name not in manifest.files]
        if missing:
            raise ManifestError(f"invalid manifest: files lacks {', '.join(missing)}")
        return manifest
