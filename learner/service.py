"""``recq learner``: the transitions feed (asyncio, this thread) and the trainer (its own
thread) around one replay store, plus the vocabulary follower and the snapshot
announcer. Stops cleanly on SIGINT/SIGTERM with a final checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import TypeVar

import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import start_http_server

from kafkaio.connection import client_options, quiet_retriable_client_errors
from kafkaio.vocabulary import ItemVocabulary
from learner import checkpoint
from learner.catalog import CatalogFeatures, CatalogFollower
from learner.device import pick_device, pin_threads
from learner.dqn import DQN, select_dtype_for
from learner.export import SnapshotExporter
from learner.feed import TransitionFeed
from learner.gate import Gate, SlateWindow
from learner.guard import OnlineGuard
from learner.metrics import TensorBoard
from learner.qnet import QNetwork
from learner.replay.buffer import ReplayBuffer
from learner.replay.slates import SlateStore
from learner.retrieval import RETRIEVABLE, RetrievalExporter
from learner.trainer import Trainer
from schemas.codec import Limits, encode
from schemas.manifest import TrainedThrough
from schemas.model_store import ModelStore
from schemas.records import DeadLetter, SlateTransition, SnapshotAnnouncement
from schemas.settings import LearnerSettings
from schemas.topics import TopicCatalog, TopicRole

log = logging.getLogger("recq.learner")
T = TypeVar("T")


def build_dqn(settings: LearnerSettings, device: torch.device, n_items: int,
              capacity: int | None = None) -> DQN:  # fmt: skip
    net = QNetwork(
        n_items=n_items,
        dim=settings.embedding_dim,
        history_length=settings.history_length,
        encoder=settings.encoder,
        supervised_head=settings.supervised_head,
        capacity=capacity,
        prior_impressions=settings.response_prior_impressions,
        q_prior=settings.response_prior == "next_item+q",
    ).to(device)
    return DQN(
        net,
        settings,
        select_dtype=select_dtype_for(device),
        mixed_precision=device.type == "cuda",
    )


async def run_learner(settings: LearnerSettings, bootstrap: str,
                      stopping: asyncio.Event | None = None) -> None:  # fmt: skip
    stopping = stopping or asyncio.Event()
    quiet_retriable_client_errors()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    intra, inter = pin_threads(settings.learner_threads)
    log.info("learner: %d torch compute thread(s), %d inter-op (RECQ_LEARNER_THREADS=%d)",
             intra, inter, settings.learner_threads)  # fmt: skip

    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)
    options = client_options(settings)
    device = pick_device(settings.learner_device)
    torch.manual_seed(settings.learner_seed)
    checkpoint_path = settings.learner_dir / checkpoint.CHECKPOINT_FILE
    saved = checkpoint.peek(checkpoint_path)

    vocabulary = ItemVocabulary(
        topic=catalog.name(TopicRole.ITEM_VOCABULARY), bootstrap_servers=bootstrap,
        # Not read-only with item features: catalog items are claimed, so they are scored
        # before anyone interacts with them.
        client_options=options, read_only=not settings.item_features,
    )  # fmt: skip
    await vocabulary.start()
    n_items = max(len(vocabulary), saved.n_items if saved else 1)
    dqn = build_dqn(settings, device, n_items, saved.capacity if saved else None)
    checkpoint.restore(checkpoint_path, dqn)
    replay = ReplayBuffer.build(
        capacity=settings.replay_capacity, history_length=settings.history_length,
        device=device, prioritized=settings.replay_prioritized, n_step=settings.n_step,
        gamma=settings.gamma, alpha=settings.per_alpha,
    )  # fmt: skip
    slates = SlateStore(settings.slate_replay_capacity, settings.history_length, device)
    store = ModelStore(settings.model_store_dir)
    store.clean_temp()
    window = SlateWindow(settings.gate_slates)
    gate = (
        Gate(window=window, store=store, margin=settings.gate_margin,
             policy=settings.exploration_policy(),
             min_slates=settings.gate_min_slates, seed=settings.learner_seed)
        if settings.gate == "on" else None
    )  # fmt: skip
    guard = (
        OnlineGuard(store, alpha=settings.guard_alpha,
                    min_impressions=settings.guard_min_impressions)
        if settings.guard == "on" else None
    )  # fmt: skip
    observers: list[Callable[[list[SlateTransition]], object]] = []
    if gate is not None:
        observers.append(window.add)
    if guard is not None:
        observers.append(guard.observe)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=settings.learner_group_id,
        enable_auto_commit=False, isolation_level="read_committed", **options,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    await consumer.start()
    await producer.start()
    feed = TransitionFeed(
        consumer=consumer, producer=producer, topic=catalog.name(TopicRole.TRANSITIONS),
        dead_letter_topic=catalog.name(TopicRole.DEAD_LETTER), replay=replay,
        slates=slates, limits=Limits.from_settings(settings), slate_observers=observers,
    )  # fmt: skip
    starts = await feed.assign(saved.offsets if saved else None)
    features = CatalogFeatures()
    follower = None
    if settings.item_features:

        async def claim(item_ids: list[str]) -> None:
            await vocabulary.indices(item_ids)

        async def dead_letter(letter: DeadLetter) -> None:
            await producer.send_and_wait(catalog.name(TopicRole.DEAD_LETTER), encode(letter))

        follower = CatalogFollower(
            topic=catalog.name(TopicRole.CATALOG), bootstrap_servers=bootstrap,
            features=features, claim=claim, dead_letter=dead_letter,
            limits=Limits.from_settings(settings), client_options=options,
            group_id=f"{settings.learner_group_id}-catalog",
        )  # fmt: skip
        await follower.start()
    announcements: asyncio.Queue[SnapshotAnnouncement] = asyncio.Queue()
    tensorboard_dir = settings.data_dir / "tensorboard" if settings.tensorboard else None
    trainer = Trainer(
        dqn=dqn, replay=replay, slates=slates, store=store,
        exporter=SnapshotExporter(settings.snapshot_top_k, settings.ranking),
        retrieval=RetrievalExporter(
            settings.ranking, candidates=settings.index_candidates,
            min_recall=settings.index_min_recall,
        ) if settings.ranking in RETRIEVABLE else None,
        item_ids=vocabulary.ids, catalog_size=vocabulary.__len__,
        item_features=(lambda: features.take(vocabulary.get)) if follower else None,
        offsets=lambda: dict(feed.positions),
        announce=lambda a: _call_soon(loop, announcements.put_nowait, a),
        checkpoint_path=checkpoint_path, config=settings, reward=settings.reward(),
        tensorboard=TensorBoard(tensorboard_dir),
        on_exit=lambda: _call_soon(loop, lambda _: stopping.set(), None),
        gate=gate,
        trained_through=lambda: TrainedThrough(
            offsets={str(p): o for p, o in feed.positions.items()},
            event_ts_ms=feed.newest_event_ts_ms,
        ),
    )  # fmt: skip
    log.info(
        "learner on %s: %d items, replay refill from %s, resumed at update %d",
        device,
        dqn.online.n_items,
        starts,
        dqn.updates,
    )
    trainer.start()

    async def announce() -> None:
        topic = catalog.name(TopicRole.SNAPSHOTS)
        while True:
            a = await announcements.get()
            await producer.send_and_wait(topic, encode(a), key=b"snapshot")
            log.info("snapshot %d announced (update %d)", a.version, a.step)

    tasks = [
        asyncio.create_task(feed.run(stopping), name="transitions-feed"),
        asyncio.create_task(announce(), name="snapshot-announcer"),
    ]
    try:
        await stopping.wait()
    finally:
        await asyncio.to_thread(trainer.stop)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not announcements.empty():  # the last snapshots still get announced
            a = announcements.get_nowait()
            await producer.send_and_wait(catalog.name(TopicRole.SNAPSHOTS), encode(a),
                                         key=b"snapshot")  # fmt: skip
        if trainer.error is None and dqn.updates:
            checkpoint.save(checkpoint_path, dqn, dict(feed.positions))
        with contextlib.suppress(Exception):
            await feed.commit()
        if follower is not None:
            await follower.stop()
        await consumer.stop()
        await producer.stop()
        await vocabulary.stop()
        trainer.tensorboard.close()
    if trainer.error is not None:
        raise RuntimeError(f"training thread failed: {trainer.error}") from trainer.error


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[T], None], arg: T) -> None:
    """Hand a value from the trainer thread to the event loop."""
    loop.call_soon_threadsafe(fn, arg)
