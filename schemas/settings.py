"""Settings by stage, read from ``RECQ_*`` environment variables (and an optional
``.env``). Each process loads the object of its stage and nothing else, so a bad learner
setting does not stop a serving member, and an invalid value fails at start naming the
variable.

    ConnectionSettings   Kafka address, security, topic names: every process
    StageSettings        + contract limits, paths, metrics port: every recq process
    StreamsSettings      + the streams worker's rules, the reward, L
    LearnerSettings      + replay, DQN, snapshots, the reward (recorded in manifests), L
    ServingSettings      + exploration, micro-batching, filters
    RewardSettings       the reward weights alone (the demo's scoring)

Every field has one default and one description, here; docs/configuration.md
tables list the same. ``stage_env`` builds environments for subprocesses (demo, benches,
tests) and refuses names that no stage reads.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import features
from schemas.exploration import Policy
from schemas.reward import Reward

ENV_PREFIX = "RECQ_"
#: Where containers get secrets as files (compose ``secrets:``, Kubernetes volumes); a
#: file named like a variable (``recq_sasl_password``) sets it when the directory exists.
SECRETS_DIR = Path("/run/secrets")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

log = logging.getLogger("recq.settings")


class SettingsError(ValueError):
    """Raised at start when a ``RECQ_*`` setting is invalid; the message names it."""


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )


class ConnectionSettings(_Settings):
    """How to reach Kafka and name recq's topics."""

    bootstrap_servers: str | None = Field(
        default=None,
        pattern=r"^[^\s,]+:\d{1,5}(,[^\s,]+:\d{1,5})*$",
        description="host:port[,host:port...] of an external cluster. Unset: the embedded "
        "broker started by `recq kafka start` (its address is read from its state file).",
    )
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="Kafka security.protocol."
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="SASL mechanism; required with SASL_PLAINTEXT / SASL_SSL."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (never logged)."
    )
    ssl_cafile: Path | None = Field(default=None, description="CA bundle for SSL / SASL_SSL.")
    ssl_certfile: Path | None = Field(default=None, description="Client certificate (mTLS).")
    ssl_keyfile: Path | None = Field(default=None, description="Client private key (mTLS).")
    ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of the client private key."
    )

    # --- Topics -----------------------------------------------------------------------
    topic_prefix: str = Field(
        default="recq.",
        max_length=100,
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prefix of every recq topic name (lets several deployments share a cluster).",
    )
    partitions: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Partition count shared by the event topics and the request topic "
        "(co-partitioned by user_id). Cannot be changed once topics exist.",
    )
    replication_factor: int = Field(
        default=1, ge=1, le=16, description="Replication factor of topics recq creates."
    )

    @model_validator(mode="after")
    def _security_is_complete(self) -> Self:
        if self.security_protocol.startswith("SASL_"):
            missing = [
                f"{ENV_PREFIX}{name.upper()}"
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"RECQ_SECURITY_PROTOCOL={self.security_protocol} needs {', '.join(missing)}"
                )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{ENV_PREFIX}{name.upper()}={path} is not a readable file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("RECQ_SSL_CERTFILE and RECQ_SSL_KEYFILE must be set together")
        return self


class StageSettings(ConnectionSettings):
    """What every recq process shares: the contract's limits, where state lives, metrics."""

    max_payload_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=8 * 1024 * 1024,
        description="Largest accepted message value; larger ones are dead-lettered.",
    )
    max_clock_skew_s: int = Field(
        default=24 * 3600,
        ge=0,
        le=30 * 24 * 3600,
        description="How far in the future an event timestamp may be before it is rejected.",
    )

    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Prometheus /metrics port; 0 disables it."
    )
    data_dir: Path = Field(
        default=Path("data"),
        description="Runtime state: embedded broker (data_dir/kafka), table state "
        "(data_dir/streams), learner checkpoints (data_dir/learner).",
    )
    model_store: Path | None = Field(
        default=None, description="Where snapshots are written and read; default data_dir/models."
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "recq",
        description="Downloaded artefacts kept outside git (the Kafka jars).",
    )
    kafka_heap: str = Field(
        default="-Xms128m -Xmx768m",
        max_length=1000,
        description="JVM heap options of the embedded broker (`recq kafka start`).",
    )

    @cached_property
    def model_store_dir(self) -> Path:
        return self.model_store if self.model_store is not None else self.data_dir / "models"

    @cached_property
    def learner_dir(self) -> Path:
        return self.data_dir / "learner"

    @cached_property
    def embedded_kafka_dir(self) -> Path:
        return self.data_dir / "kafka"


class RewardSettings(_Settings):
    """The reward weights (``schemas.reward``): what each interaction earns."""

    reward_click: float = Field(default=0.2, ge=-100.0, le=100.0, description="A click.")
    reward_cart: float = Field(default=0.5, ge=-100.0, le=100.0, description="A cart add.")
    reward_purchase: float = Field(
        default=1.0, ge=-100.0, le=100.0, description="Each line item of a purchase."
    )
    reward_cart_remove: float = Field(
        default=-0.5,
        ge=-100.0,
        le=100.0,
        description="A cart removal: negative, it takes back what the add earned.",
    )

    reward_revenue: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="Per unit of currency of a purchased line (unit price x quantity): the "
        "revenue objective. 0 (off) by default.",
    )

    def reward(self) -> Reward:
        return Reward.from_settings(self)


class HistorySettings(_Settings):
    """The state's length, which the streams worker and the learner must agree on."""

    history_length: int = Field(
        default=features.DEFAULT_HISTORY_LENGTH,
        ge=1,
        le=200,
        description="L: interactions in a transition's state (serving reads L from the "
        "snapshot's manifest).",
    )


class ExplorationSettings(_Settings):
    """How serving draws shown items from a snapshot's top-K: what serving members run
    and what the learner's off-policy gate assumes a candidate will be served with."""

    exploration: Literal["greedy", "epsilon", "softmax"] = Field(
        default="epsilon", description="How shown items are drawn from the model's top-K."
    )
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0, description="epsilon-greedy rate.")
    softmax_temperature: float = Field(
        default=1.0, gt=0.0, le=1000.0, description="Temperature of softmax exploration."
    )

    def exploration_policy(self) -> Policy:
        return Policy(self.exploration, self.epsilon, self.softmax_temperature)


class GroupSettings(_Settings):
    """Consumer-group liveness, for the stages that share partitions (streams, serving)."""

    broker_session_timeout_s: float = Field(
        default=10.0,
        ge=6.0,
        le=300.0,
        description="Consumer-group session timeout: how soon a dead worker's partitions move.",
    )


class StreamsSettings(StageSettings, RewardSettings, HistorySettings, GroupSettings):
    """``recq worker``: the Faust app that turns events into transitions."""

    streams_app_id: str = Field(
        default="recq-streams",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Faust app id: consumer group, changelog and transactional-id prefix.",
    )
    streams_store: str = Field(
        default="memory://",
        pattern=r"^(memory|rocksdb|aerospike)://.*$",
        description="Faust table store; rocksdb:// (with rocksdict installed) for large state.",
    )
    processing_guarantee: Literal["exactly_once", "at_least_once"] = Field(
        default="exactly_once", description="Kafka transactions (exactly_once) or not."
    )
    streams_eos_untested: bool = Field(
        default=False,
        description="Run exactly-once on a faust-streaming or aiokafka release that "
        "streams/eos.py's patches were not tested with (the worker refuses at start "
        "otherwise). Run `make reliability` with that release first.",
    )
    streams_commit_livelock_s: float = Field(
        default=300.0,
        ge=1.0,
        le=86_400.0,
        description="Faust's commit-liveness check: an input partition that is processing "
        "but has committed nothing for this long is logged as an error.",
    )
    streams_state_writes: Literal["commit", "event"] = Field(
        default="commit",
        description="When a shopper's session is written to the sessions Table's changelog: "
        "once per commit (the last value of each shopper touched since the last commit) or "
        "on every event (the behaviour before issue 24).",
    )
    streams_batch_max: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Events per batch: a worker commits its outputs, the sessions it "
        "touched and the offsets of its events together once a batch has this many events "
        "(or has waited RECQ_STREAMS_BATCH_WAIT_MS). 1 commits every event.",
    )
    streams_batch_wait_ms: float = Field(
        default=500.0,
        ge=1.0,
        le=60_000.0,
        description="The longest a batch stays open after its first event: the most a "
        "transition waits to be committed (readers see it then, read_committed).",
    )
    transitions_format: Literal["batch", "record"] = Field(
        default="batch",
        description="How a worker writes transitions: batch (a few columnar "
        "transition_batch messages per batch and partition) or record (one message per "
        "transition, as before issue 24). Readers in recq accept both.",
    )
    streams_producer_linger_ms: float = Field(
        default=5.0,
        ge=0.0,
        le=1000.0,
        description="How long a worker's producers gather outputs into one request.",
    )
    reorder_window_s: float = Field(
        default=2.0,
        ge=0.0,
        le=3600.0,
        description="A user's events are put in event-time order within this window.",
    )
    session_timeout_s: float = Field(
        default=1800.0, gt=0.0, description="Inactivity that ends a session (done=True)."
    )
    session_tick_s: float = Field(
        default=1.0, gt=0.0, le=600.0, description="How often idle sessions are looked for."
    )
    reward_wait_s: float = Field(
        default=600.0,
        gt=0.0,
        le=7 * 86_400.0,
        description="A shown recommendation's reward window: events carrying its rec_id "
        "earn it rewards this long (event time) before its slate transition is written "
        "(earlier if the shopper's session ends).",
    )
    impressions: Literal["implicit", "explicit"] = Field(
        default="implicit",
        description="implicit: a published recommendation counts as shown in full; "
        "explicit: only the positions the shop reports on the impression topic.",
    )
    done_on_purchase: bool = Field(
        default=True, description="A purchase ends the session (checkout) with done=True."
    )


class LearnerSettings(StageSettings, RewardSettings, HistorySettings, ExplorationSettings):
    """``recq learner``: replay store, DQN updates, snapshots and checkpoints."""

    learner_group_id: str = Field(
        default="recq-learner",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Consumer group of the learner on the transitions topic.",
    )
    learner_seed: int = Field(
        default=0,
        ge=0,
        le=2**63 - 1,
        description="Seed of the network's initial weights and of replay sampling.",
    )
    learner_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: cuda when torch sees a GPU, else cpu."
    )
    learner_threads: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="torch compute threads of the learner (intra-op; inter-op is 1). 0 = "
        "torch's default, one per core. 1 by default because the learner usually shares "
        "cores with the broker, workers or serving, and oversubscribed OpenMP threads "
        "stall each other (a GRU step over a batch of 256 took 549 ms with 2 threads "
        "beside one busy process, 13 ms with 1). Raise it where the learner has cores of "
        "its own (a CPU limit in compose; on a GPU it matters little).",
    )
    replay_capacity: int = Field(
        default=200_000, ge=64, le=100_000_000, description="Transitions kept for replay."
    )
    replay_prioritized: bool = Field(
        default=True, description="Proportional prioritized replay (else uniform)."
    )
    per_alpha: float = Field(default=0.6, ge=0.0, le=1.0, description="PER priority exponent.")
    per_beta: float = Field(
        default=0.4, ge=0.0, le=1.0, description="PER importance exponent at the start."
    )
    per_beta_updates: int = Field(
        default=100_000, ge=1, description="Updates over which beta anneals to 1."
    )
    n_step: int = Field(default=3, ge=1, le=50, description="n of n-step returns.")
    gamma: float = Field(default=0.9, ge=0.0, le=1.0, description="Discount per step.")
    batch_size: int = Field(default=256, ge=1, le=65_536, description="Samples per update.")
    learning_rate: float = Field(
        default=3e-3, gt=0.0, le=1.0, description="AdamW step size (bench/learner_quality.py)."
    )
    weight_decay: float = Field(default=1e-5, ge=0.0, le=1.0, description="AdamW weight decay.")
    target_tau: float = Field(
        default=0.01, gt=0.0, le=1.0, description="Soft update rate of the target network."
    )
    grad_clip: float = Field(default=10.0, gt=0.0, description="Max gradient norm.")
    embedding_dim: int = Field(
        default=64, ge=4, le=1024, description="Size of item embeddings and user vectors."
    )
    encoder: Literal["gru", "transformer"] = Field(
        default="gru", description="Sequence encoder of the Q-network."
    )
    supervised_head: bool = Field(
        default=False,
        description="Train a next-item softmax head on the same encoder (SQN, Xin et al. "
        "2020); with RECQ_RANKING=response it is also the organic prior of the ranking. Off "
        "by default: in bench/slate_loop.py the response ranking earned 15-20% less with it "
        "(docs/performance.md).",
    )
    supervised_negatives: int = Field(
        default=1024,
        ge=0,
        le=1_000_000,
        description="Sampled-softmax negatives for the supervised head; 0 = full softmax.",
    )
    negative_actions: int = Field(
        default=256,
        ge=0,
        le=100_000,
        description="Sampled untaken actions per batch whose Q is regressed to 0 (SNQN); "
        "0 disables. Without them the Q ranking stays near random on logged data.",
    )
    slate_learning: Literal["off", "td", "slateq"] = Field(
        default="td",
        description="What the learner takes from slate transitions: off (organic only), "
        "td (answered slots as TD samples, ignored ones regressed to 0), slateq (choice "
        "model + SlateQ targets, snapshots rank by choice score x Q). td measured best "
        "(bench/slate_loop.py; docs/performance.md).",
    )
    ranking: Literal["response", "q", "slateq", "next_item"] = Field(
        default="response",
        description="What snapshots rank by: response (the expected reward of showing an "
        "item, learned from every shown slot), q (the Q-network), slateq (choice score x Q; "
        "needs RECQ_SLATE_LEARNING=slateq), next_item (the supervised next-item head alone: "
        "the supervised control; needs RECQ_SUPERVISED_HEAD=true). response measured best "
        "(bench/slate_loop.py).",
    )
    response_prior_impressions: float = Field(
        default=20.0, gt=0.0, le=1e6,
        description="n0 of the response ranking: an item's learned correction of the organic "
        "prior counts with weight n / (n + n0) after n impressions (pessimism where few "
        "impressions back it).",
    )  # fmt: skip
    response_prior: Literal["next_item", "next_item+q"] = Field(
        default="next_item",
        description="The organic prior of the response ranking: the next-item head, or "
        "that plus the Q-network's advantage (what organic and slate TD say an item is "
        "worth), each weighted by what the slates fit.",
    )
    item_features: bool = Field(
        default=True,
        description="Item vectors add the catalog topic's features (category embedding, "
        "log price x a learned vector) to each item's own row; items the catalog does not "
        "describe get no feature part. Folded into the item table at export.",
    )
    organic_reward: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Share of an organic interaction's reward that counts as earned by the "
        "recommender in the Q-network's TD targets (1: every organic click as if a "
        "recommendation caused it). 0 by default: organic behaviour is context and the "
        "response ranking's prior, not reward (docs/simulator.md, Quality).",
    )  # fmt: skip
    slate_replay_capacity: int = Field(
        default=50_000, ge=64, le=10_000_000, description="Slate transitions kept for replay."
    )
    slate_batch_size: int = Field(
        default=128, ge=1, le=65_536, description="Slates per update (with each organic batch)."
    )
    warmup_transitions: int = Field(
        default=1_000, ge=1, description="Training starts once replay holds this many."
    )
    snapshot_every_updates: int = Field(
        default=500, ge=1, description="A snapshot every this many updates (or seconds, below)."
    )
    snapshot_every_s: float = Field(
        default=5.0, gt=0.0, description="A snapshot every this many seconds of training."
    )
    snapshot_min_updates: int = Field(
        default=500, ge=0, description="No snapshot before this many updates (then popularity)."
    )
    snapshots_keep: int = Field(
        default=5, ge=1, le=1000, description="Snapshots kept in the store; older are pruned."
    )
    snapshot_top_k: int = Field(
        default=50, ge=1, le=10_000, description="K of the top-K inside the ONNX graph."
    )
    index_min_items: int = Field(
        default=50_000,
        ge=1,
        description="Catalogs at least this large get a candidate index (faiss) in each "
        "snapshot and are served through it; smaller ones by the exact in-graph top-K.",
    )
    index_candidates: int = Field(
        default=256, ge=50, le=10_000, description="Items the index proposes per state."
    )
    index_min_recall: float = Field(
        default=0.95,
        ge=0.0,
        le=1.0,
        description="Least recall@50 of index candidates vs exact scoring (sampled states); "
        "below it the snapshot is not written.",
    )
    checkpoint_every_s: float = Field(
        default=30.0, gt=0.0, description="Checkpoint cadence (and one at shutdown)."
    )
    gate: Literal["on", "off"] = Field(
        default="on",
        description="Off-policy gate: a snapshot is served only if the recent logged "
        "slates say it is not worse than the one serving (learner/gate.py); off: every "
        "well-formed snapshot is served.",
    )
    gate_margin: float = Field(
        default=0.2, ge=0.0, le=10.0,
        description="Loss the gate tolerates, as a fraction of the serving policy's "
        "estimated reward per slate: promoted if the lower confidence bound of "
        "(candidate - current) > -margin x current.",
    )  # fmt: skip
    gate_slates: int = Field(
        default=5_000, ge=10, le=1_000_000, description="Most recent closed slates judged on."
    )
    gate_min_slates: int = Field(
        default=200, ge=1, le=1_000_000,
        description="Below this many logged slates the gate cannot judge: promoted, "
        "decision 'unjudged'.",
    )  # fmt: skip
    guard: Literal["on", "off"] = Field(
        default="on",
        description="Online guard: pin the previous snapshot when a served one earns "
        "significantly less reward per impression (learner/guard.py).",
    )
    guard_alpha: float = Field(
        default=0.01, gt=0.0, lt=0.5,
        description="The guard's false-alarm rate per snapshot compared (always-valid "
        "mSPRT).",
    )  # fmt: skip
    guard_min_impressions: int = Field(
        default=1_000, ge=10, le=100_000_000,
        description="Impressions each of two snapshots needs before the guard compares them.",
    )  # fmt: skip
    tensorboard: bool = Field(
        default=True, description="Write TensorBoard scalars under data_dir/tensorboard."
    )

    @model_validator(mode="after")
    def _ranking_is_trained(self) -> Self:
        if self.ranking == "slateq" and self.slate_learning != "slateq":
            raise ValueError(
                f"{ENV_PREFIX}RANKING=slateq ranks by the choice model, which only "
                f"{ENV_PREFIX}SLATE_LEARNING=slateq trains: set both, or another ranking"
            )
        if self.ranking == "next_item" and not self.supervised_head:
            raise ValueError(
                f"{ENV_PREFIX}RANKING=next_item ranks by the next-item head: set "
                f"{ENV_PREFIX}SUPERVISED_HEAD=true, or another ranking"
            )
        return self


class ServingSettings(StageSettings, GroupSettings, ExplorationSettings):
    """``recq serve``: a consumer-group member answering rec-requests."""

    serve_group_id: str = Field(
        default="recq-serve",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Consumer group of the serving members (rec-requests + event topics).",
    )
    serve_max_wait_ms: float = Field(
        default=2.0, ge=0.0, le=1000.0, description="Micro-batching: longest wait for company."
    )
    serve_max_batch: int = Field(
        default=256, ge=1, le=65_536, description="Most requests in one model call."
    )
    serve_threads: int = Field(
        default=0, ge=0, le=1024, description="onnxruntime intra-op threads; 0 = all cores."
    )
    serve_blocklist: str = Field(
        default="", max_length=1_000_000, description="Comma-separated item ids never shown."
    )
    serve_exclude_seen: bool = Field(
        default=False,
        description="Never show items among the shopper's last L interactions (a next-item "
        "model ranks the item just viewed or carted first; the shopper has seen it).",
    )
    serve_on_events: bool = Field(
        default=False,
        description="Also publish a recommendation after each click/cart/purchase event "
        "(request_id = 'event:<event_id>'), as if the shop had asked.",
    )
    serve_event_k: int = Field(
        default=10, ge=1, le=200, description="k of event-triggered recommendations."
    )
    serve_max_request_age_s: float = Field(
        default=60.0, gt=0.0, description="Older requests are skipped (counted), not answered."
    )
    serve_state_lookback_s: float = Field(
        default=3600.0,
        ge=0.0,
        le=30 * 86_400.0,
        description="On assignment, rebuild the partition's shoppers from this many seconds "
        "of its events before answering it (0: start from empty histories).",
    )


STAGES: tuple[type[_Settings], ...] = (StreamsSettings, LearnerSettings, ServingSettings)
#: Every variable some recq process reads.
KNOWN_VARIABLES = frozenset(
    f"{ENV_PREFIX}{name.upper()}" for stage in STAGES for name in stage.model_fields
)

#: RECQ_* variables read by recq's tooling, not by a stage (no "not a setting" warning).
TOOLING_VARIABLES = frozenset({"RECQ_TEST_SECURE", "RECQ_TEST_BASE_IMAGE"})
#: How a client authenticates to the broker (not which broker, not what a stage does).
CONNECTION_SECURITY_VARIABLES = frozenset(
    f"{ENV_PREFIX}{name.upper()}"
    for name in ConnectionSettings.model_fields
    if name.startswith(("security_", "sasl_", "ssl_"))
)

S = TypeVar("S", bound=_Settings)


def load_settings(cls: type[S], **overrides: object) -> S:
    """Read one stage's settings, turning validation errors into one message naming each
    variable; warn about ``RECQ_*`` variables that no stage reads (a misspelt name would
    otherwise be ignored without a word)."""
    for name in sorted(set(os.environ) - KNOWN_VARIABLES - TOOLING_VARIABLES):
        if name.startswith(ENV_PREFIX):
            log.warning("%s is not a recq setting%s", name, _did_you_mean(name))
    if SECRETS_DIR.is_dir() and "_secrets_dir" not in overrides:
        # Docker / Kubernetes secrets: a file named like the variable (recq_sasl_password)
        overrides["_secrets_dir"] = SECRETS_DIR
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(part) for part in err["loc"]]
            name = f"{ENV_PREFIX}{loc[0].upper()}" if loc else "settings"
            problems.append(f"{name}: {err['msg']}" if loc else err["msg"])
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


def stage_env(
    base: Mapping[str, str] | None = None, **settings: str | int | float | bool | Path
) -> dict[str, str]:
    """An environment for a recq subprocess: ``base`` (default: this process's) without
    its ``RECQ_*`` variables, plus ``settings`` given as ``RECQ_NAME=value`` keywords.
    The connection's security settings (protocol, SASL, TLS) are kept: a child reaches
    the broker its parent reaches, with the same credentials.
    Refuses a name that no stage reads, so a misspelt setting fails here, not silently
    in the child."""
    source = os.environ if base is None else base
    env = {
        k: v
        for k, v in source.items()
        if not k.startswith(ENV_PREFIX) or k in CONNECTION_SECURITY_VARIABLES
    }
    for name, value in settings.items():
        if name not in KNOWN_VARIABLES:
            raise SettingsError(f"{name} is not a recq setting{_did_you_mean(name)}")
        env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
