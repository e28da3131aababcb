"""The replay store the trainer sees: storage + sampler + writer behind one lock.

The consumer thread calls ``add``; the training thread calls ``sample`` and
``update_priorities``. Each holds the lock only for tensor bookkeeping (microseconds to a
millisecond), never during a gradient step, so neither waits on the other. Priorities
are only written back to slots that were not overwritten since they were sampled.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import torch

from learner.replay.sampler import PrioritizedSampler, Sampler, UniformSampler
from learner.replay.storage import Batch, TensorStorage
from learner.replay.writer import NStepWriter
from schemas.records import Transition


class ReplayBuffer:
    def __init__(self, storage: TensorStorage, sampler: Sampler, writer: NStepWriter) -> None:
        self.storage = storage
        self.sampler = sampler
        self.writer = writer
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls,
        *,
        capacity: int,
        history_length: int,
        device: torch.device,
        prioritized: bool,
        n_step: int,
        gamma: float,
        alpha: float = 0.6,
    ) -> ReplayBuffer:
        sampler: Sampler = (
            PrioritizedSampler(capacity, device, alpha=alpha)
            if prioritized
            else UniformSampler(device)
        )
        return cls(
            TensorStorage(capacity, history_length, device),
            sampler,
            NStepWriter(n_step, gamma, history_length),
        )

    def __len__(self) -> int:
        return len(self.storage)

    @property
    def device(self) -> torch.device:
        return self.storage.device

    def add(self, transitions: Iterable[Transition]) -> int:
        """Feed transitions to the n-step writer; returns how many samples were stored."""
        for t in transitions:
            self.writer.add(t)
        return self.commit_pending()

    def flush(self) -> int:
        self.writer.flush()
        return self.commit_pending()

    def commit_pending(self) -> int:
        samples = self.writer.drain()
        if not len(samples):
            return 0
        with self._lock:
            slots = self.storage.extend(samples)
            self.sampler.on_write(slots)
        return len(slots)

    def sample(self, batch_size: int, beta: float = 0.4) -> Batch:
        with self._lock:
            size = len(self.storage)
            if size == 0:
                raise ValueError("sample() on an empty replay store")
            slots, weight = self.sampler.sample(batch_size, size, beta)
            return self.storage.gather(slots, weight)

    def update_priorities(self, batch: Batch, td_error: torch.Tensor) -> None:
        with self._lock:
            fresh = self.storage.stamp.index_select(0, batch.index) == batch.stamp
            self.sampler.update(batch.index[fresh], td_error[fresh])
