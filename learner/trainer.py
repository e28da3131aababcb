"""The training thread: samples the replay store, updates the Q-network, and on its
cadence writes snapshots and checkpoints. It never waits on the consumer: it trains on
whatever the store holds (once it holds ``warmup`` samples), while the consumer keeps
writing into it concurrently."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from learner import checkpoint, metrics
from learner.catalog import FeatureRows
from learner.dqn import DQN
from learner.export import SnapshotExporter, check_parity, io_spec
from learner.gate import Gate
from learner.replay.buffer import ReplayBuffer
from learner.replay.slates import SlateStore
from learner.retrieval import RetrievalError, RetrievalExporter
from schemas.manifest import GateResult, Parity, TrainedThrough
from schemas.model_store import ModelStore, WrittenSnapshot
from schemas.records import SnapshotAnnouncement
from schemas.reward import Reward
from schemas.settings import LearnerSettings

log = logging.getLogger("recq.learner")

#: A snapshot whose ONNX top-K disagrees with torch beyond these is not written.
PARITY_MIN_TOPK_EQUAL = 0.98
PARITY_MAX_ABS_DIFF = 1e-3
#: Slate terms join the updates once the slate store holds this many slates.
SLATE_WARMUP = 64


def learns_from_slates(cfg: LearnerSettings) -> bool:
    """Whether updates sample slates: for the slate TD terms or the response ranking."""
    return cfg.slate_learning != "off" or cfg.ranking == "response"


def snapshot_due(cfg: LearnerSettings, *, updates: int, since_last: int, seconds: float) -> bool:
    """Every N updates or T seconds, but never before ``snapshot_min_updates``: a barely
    trained network serves worse than the serving members' popularity fallback."""
    if updates < cfg.snapshot_min_updates:
        return False
    return since_last >= cfg.snapshot_every_updates or seconds >= cfg.snapshot_every_s


class Trainer(threading.Thread):
    def __init__(
        self,
        *,
        dqn: DQN,
        replay: ReplayBuffer,
        store: ModelStore,
        slates: SlateStore | None = None,
        exporter: SnapshotExporter,
        retrieval: RetrievalExporter | None = None,
        item_ids: Callable[[], list[str]],
        catalog_size: Callable[[], int],
        offsets: Callable[[], dict[int, int]],
        announce: Callable[[SnapshotAnnouncement], None],
        checkpoint_path: Path,
        config: LearnerSettings,
        reward: Reward,
        tensorboard: metrics.TensorBoard | None = None,
        on_exit: Callable[[], None] | None = None,
        gate: Gate | None = None,
        trained_through: Callable[[], TrainedThrough] | None = None,
        item_features: Callable[[], FeatureRows] | None = None,
    ) -> None:
        super().__init__(name="recq-trainer", daemon=True)
        self.dqn = dqn
        self.replay = replay
        self.slates = slates
        self.store = store
        self.exporter = exporter
        self.retrieval = retrieval
        self.item_ids = item_ids
        self.catalog_size = catalog_size
        self.offsets = offsets
        self.announce = announce
        self.checkpoint_path = checkpoint_path
        self.config = config
        self.reward = reward  # recorded in each snapshot's manifest
        self.tensorboard = tensorboard or metrics.TensorBoard(None)
        self.on_exit = on_exit
        self.gate = gate
        self.trained_through = trained_through
        self.item_features = item_features
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.last_snapshot: WrittenSnapshot | None = None
        self.last_losses: dict[str, float] = {}
        self._since_snapshot = 0
        self._snapshot_at = time.monotonic()
        self._checkpoint_at = time.monotonic()

    # --- thread ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced by the service, which then stops
            log.exception("training thread failed")
            self.error = exc
        finally:
            if self.on_exit is not None:
                self.on_exit()

    def stop(self, timeout: float = 60.0) -> None:
        self.stopping.set()
        self.join(timeout)

    def _loop(self) -> None:
        cfg = self.config
        window_start, window_updates = time.monotonic(), 0
        while not self.stopping.is_set():
            self.grow_catalog()
            if len(self.replay) < cfg.warmup_transitions:
                self.stopping.wait(0.05)
                continue
            stats = self.train_step()
            window_updates += 1
            now = time.monotonic()
            if now - window_start >= 1.0:
                rate = window_updates / (now - window_start)
                metrics.UPDATES_PER_S.set(rate)
                self.tensorboard.scalars(self.dqn.updates, {
                    "losses/td": stats["losses/td"], "losses/ce": stats["losses/ce"],
                    "q/mean": stats["q/mean"], "charts/updates_per_s": rate,
                    "replay/size": float(len(self.replay)),
                })  # fmt: skip
                window_start, window_updates = now, 0
            if snapshot_due(
                cfg, updates=self.dqn.updates, since_last=self._since_snapshot,
                seconds=now - self._snapshot_at,
            ):  # fmt: skip
                self.snapshot()
            if now - self._checkpoint_at >= cfg.checkpoint_every_s:
                self.checkpoint()

    # --- steps ----------------------------------------------------------------------------
    def grow_catalog(self) -> None:
        needed = max(self.catalog_size(), self.replay.storage.max_item + 1,
                     self.slates.max_item + 1 if self.slates is not None else 0)  # fmt: skip
        if needed > self.dqn.online.n_items:
            self.dqn.ensure_items(needed)
        if self.item_features is not None:
            index, category, price = self.item_features()
            if index:
                self.dqn.ensure_items(max(index) + 1)
                self.dqn.set_features(torch.tensor(index), torch.tensor(category),
                                      torch.tensor(price))  # fmt: skip
        metrics.CATALOG.set(self.dqn.online.n_items)

    def train_step(self) -> dict[str, float]:
        cfg = self.config
        progress = min(1.0, self.dqn.updates / cfg.per_beta_updates)
        beta = cfg.per_beta + (1.0 - cfg.per_beta) * progress
        batch = self.replay.sample(cfg.batch_size, beta)
        slates = None
        if self.slates is not None and learns_from_slates(cfg) and len(self.slates) >= SLATE_WARMUP:
            slates = self.slates.sample(cfg.slate_batch_size)
        stats = self.dqn.update(batch, slates)
        self.replay.update_priorities(batch, stats.td_error)
        self._since_snapshot += 1
        metrics.UPDATES.inc()
        metrics.LOSS.labels("td").set(stats.loss_td)
        metrics.LOSS.labels("ce").set(stats.loss_ce)
        metrics.LOSS.labels("slate").set(stats.loss_slate)
        metrics.LOSS.labels("choice").set(stats.loss_choice)
        metrics.LOSS.labels("response").set(stats.loss_response)
        metrics.Q_MEAN.set(stats.q_mean)
        metrics.REPLAY_SIZE.set(len(self.replay))
        self.last_losses = {"losses/td": stats.loss_td, "losses/ce": stats.loss_ce,
                            "losses/slate": stats.loss_slate, "losses/choice": stats.loss_choice,
                            "losses/response": stats.loss_response,
                            "q/mean": stats.q_mean}  # fmt: skip
        return self.last_losses

    def snapshot(self) -> WrittenSnapshot | None:
        """Export, check parity, judge (the off-policy gate), write atomically, prune,
        and announce it if the gate promoted it."""
        self._since_snapshot, self._snapshot_at = 0, time.monotonic()
        ids = self.item_ids()
        n_active = min(self.dqn.online.n_items, len(ids))
        if n_active == 0:
            return None  # nothing to name yet: no item ids have been read
        if self.slates is not None:
            self.dqn.set_impressions(self.slates.impressions())
        net = self.dqn.online
        if net.item.device.type != "cpu":  # export and parity run on a CPU copy
            net = copy.deepcopy(net).cpu()
        model, policy = self.exporter.export(net, n_active)
        parity = check_parity(model, policy)
        if not _parity_ok(parity):
            metrics.SNAPSHOTS.labels("parity_failed").inc()
            log.error("snapshot not written: ONNX/torch parity %s", parity)
            return None
        index = None
        if self.retrieval is not None and n_active >= self.config.index_min_items:
            try:
                built = self.retrieval.export(net, n_active)
            except RetrievalError as exc:
                metrics.SNAPSHOTS.labels("index_recall").inc()
                log.error("snapshot not written: %s", exc)
                return None
            index = (built.retrieval, built.files)
            log.info("candidate index %s: recall@50 %.3f (nprobe %d, %d candidates)",
                     built.retrieval.kind, built.retrieval.recall_at_50,
                     built.retrieval.nprobe, built.retrieval.candidates)  # fmt: skip
        through = self.trained_through() if self.trained_through is not None else None
        started = time.monotonic()
        gate = (
            self.gate.judge(model, n_active, self.dqn.online.history_length)
            if self.gate is not None
            else GateResult(decision="off")
        )
        metrics.GATE_SECONDS.set(time.monotonic() - started)
        written = self.store.write(
            model=model,
            item_ids=ids[:n_active],
            step=self.dqn.updates,
            k=policy.k,
            history_length=self.dqn.online.history_length,
            encoder=self.dqn.online.encoder_kind,
            reward=self.reward,
            io_spec=io_spec(self.dqn.online.history_length, policy.k),
            ranking=self.exporter.ranking,
            parity=parity,
            metrics={
                **self.last_losses,
                "replay/size": float(len(self.replay)),
                "replay/slates": float(len(self.slates) if self.slates else 0),
            },
            gate=gate,
            trained_through=through,
            retrieval=index,
        )
        self.last_snapshot = written
        metrics.SNAPSHOTS.labels("written").inc()
        metrics.SNAPSHOTS.labels(GATE_RESULTS[gate.decision]).inc()
        metrics.SNAPSHOT_VERSION.set(written.version)
        if not gate.servable:
            log.warning("snapshot %d kept on disk, not served: %s", written.version, gate.reason)
            self.store.prune(self.config.snapshots_keep)
            return written
        if gate.decision != "off":
            log.info("snapshot %d %s: %s", written.version, gate.decision, gate.reason)
        pin = self.store.pin_record()
        if pin is not None and pin.get("by") == "guard":
            # The gate judged this one against the snapshot the guard pinned.
            self.store.unpin()
            log.info("snapshot %d promoted: the online guard's pin of %s lifted",
                     written.version, pin["version"])  # fmt: skip
        self.store.prune(self.config.snapshots_keep)
        metrics.SNAPSHOT_PROMOTED.set(written.version)
        estimates = {f"gate/{name}": float(value) for name, value in (
            ("candidate", gate.candidate), ("current", gate.current), ("low", gate.low),
            ("high", gate.high), ("margin", gate.margin)) if value is not None}  # fmt: skip
        self.announce(
            SnapshotAnnouncement(
                version=written.version,
                path=written.path.name,
                sha256=written.manifest.model_sha256,
                created_ts_ms=written.manifest.created_ts_ms,
                step=written.manifest.step,
                metrics={**written.manifest.metrics, **estimates},
            )
        )
        return written

    def checkpoint(self) -> None:
        self._checkpoint_at = time.monotonic()
        checkpoint.save(self.checkpoint_path, self.dqn, self.offsets())


#: recq_learner_snapshots_total{result} for each gate decision.
GATE_RESULTS = {"promoted": "promoted", "rejected": "ope_rejected", "unjudged": "unjudged",
                "off": "promoted"}  # fmt: skip


def _parity_ok(parity: Parity) -> bool:
    return parity.topk_equal >= PARITY_MIN_TOPK_EQUAL and parity.max_abs_diff <= PARITY_MAX_ABS_DIFF
