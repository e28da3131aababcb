"""Where the learner's tensors live: CUDA when torch sees a GPU (or when asked), else CPU."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch


def pick_device(choice: Literal["auto", "cpu", "cuda"] = "auto") -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "RECQ_LEARNER_DEVICE=cuda but torch sees no CUDA device: install the gpu extra "
            "on a machine with a GPU, or set RECQ_LEARNER_DEVICE=auto"
        )
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def pin_threads(threads: int) -> tuple[int, int]:
    """Apply ``RECQ_LEARNER_THREADS`` (0 = torch's default) before any torch work, and
    return the (intra-op, inter-op) counts in force. Inter-op is one: the learner runs one
    update at a time, and torch allows setting it only before the first parallel work."""
    if threads > 0:
        torch.set_num_threads(threads)
    # Raises once inter-op work has started (a test, a second learner in one process).
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return torch.get_num_threads(), torch.get_num_interop_threads()
