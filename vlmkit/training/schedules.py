"""Learning-rate schedules usable as ``LRSchedulerCallable`` from YAML."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosineSchedule(LambdaLR):
    """Linear warmup then cosine decay to ``min_lr_ratio`` of each group's base lr (stepped per optimizer step).

    Args:
        optimizer: The optimizer (supplied by the LightningModule).
        warmup_steps: Steps of linear warmup from 0.
        total_steps: Step at which the cosine reaches its minimum (constant afterwards).
        min_lr_ratio: Final learning rate as a fraction of the base one.
    """

    def __init__(
        self, optimizer: Optimizer, warmup_steps: int = 100, total_steps: int = 1000, min_lr_ratio: float = 0.1
    ) -> None:
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(f"need total_steps > 0 and warmup_steps >= 0, got {total_steps=} {warmup_steps=}")
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
