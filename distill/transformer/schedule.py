"""The schedule every trainer of a transformer student follows."""

from __future__ import annotations

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
    """

    lr: float
    seconds: float
    epochs: float = 1.0
    batch_size: int = 16
    warmup: float = 0.05
    eval_steps: int = 50
    seed: int = 42

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

    def deadline(self) -> float:
        """The `time.monotonic` moment the budget ends, counted from now."""
        return time.monotonic() + self.seconds
