"""Where the learner computes: CPU without a GPU, an explicit cuda refused without one,
and RECQ_LEARNER_THREADS applied to torch."""

from __future__ import annotations

import pytest
import torch

from learner.device import pick_device, pin_threads
from schemas.settings import LearnerSettings


def test_device_choice_without_a_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="RECQ_LEARNER_DEVICE=cuda"):
        pick_device("cuda")


def test_learner_threads_default_to_one_and_are_applied() -> None:
    assert LearnerSettings().learner_threads == 1
    before = torch.get_num_threads()
    try:
        assert pin_threads(3)[0] == 3 == torch.get_num_threads()
        assert pin_threads(0)[0] == 3  # 0 leaves torch's setting alone
    finally:
        torch.set_num_threads(before)
