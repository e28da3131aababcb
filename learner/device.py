"""Where the learner's tensors live: CUDA when torch sees a GPU (or when asked), else CPU."""

from __future__ import annotations

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
