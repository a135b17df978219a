"""The schedule every trainer of a transformer student follows."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Schedule:
    """How a trainer spends its steps.

    Attributes:
        lr: Peak learning rate (AdamW).
        seconds: Wall-clock budget; training stops once it is spent (evaluations
            included).
        epochs: Passes over the training examples at most; the learning rate decays to
            zero at the end of them.
        batch_size: Examples a step.
        warmup: Share of the planned steps with a linear warm-up before the cosine
            decay.
        eval_steps: Steps between validation passes.
        seed: Seed of the example order.
        bf16: Compute forward and backward passes under ``torch.autocast`` in bf16
            (weights and optimizer state stay fp32); for CPUs with bf16 units.
    """

    lr: float
    seconds: float
    epochs: float = 1.0
    batch_size: int = 16
    warmup: float = 0.05
    eval_steps: int = 50
    seed: int = 42
    bf16: bool = False

    def planned(self, steps_per_epoch: int) -> int:
        """Steps in `epochs` passes of `steps_per_epoch` steps (at least one)."""
        return max(1, math.ceil(steps_per_epoch * self.epochs))

    def warmup_steps(self, planned: int) -> int:
        """Steps of the linear warm-up (at least one)."""
        return max(1, int(self.warmup * planned))

    def scheduler(self, optimizer: Any, planned: int) -> Any:
        """transformers' linear warm-up + cosine decay to zero at `planned` steps."""
        from transformers import get_cosine_schedule_with_warmup

        return get_cosine_schedule_with_warmup(optimizer, self.warmup_steps(planned), planned)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context training and validation passes run in: autocast bf16 or none."""
        return mixed_precision(self.bf16)

    def deadline(self) -> float:
        """The `time.monotonic` moment the budget ends, counted from now."""
        return time.monotonic() + self.seconds


def mixed_precision(bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` in bf16 on the CPU when `bf16`, else nothing."""
    if not bf16:
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)
