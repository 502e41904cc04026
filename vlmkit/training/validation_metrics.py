"""Teacher-forced evaluation metrics that give the same value on N ranks as on one process.

``WeightedMean`` sums ``value * weight`` and ``weight`` (torchmetrics syncs both as sums), so padding rows
(weight 0) and uneven shares change nothing. ``TaskAccuracy`` is the accuracy per task. The tasks are
whatever the batches name (``batch["task"]``), so they are not known before the first batch, and a rank
may never see some of them. Logging one value per task with ``sync_dist`` would reduce the values in the
order each rank first met its tasks (mixing tasks across ranks) and wait forever for a task one rank
never saw. Instead each rank keeps (correct, total) per task on the device, and
:meth:`TaskAccuracy.compute` gathers every rank's counts in one collective and sums them by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torchmetrics import Metric


class WeightedMean(Metric):
    """``sum(value * weight) / sum(weight)`` over every update of every rank.

    Unlike ``torchmetrics.MeanMetric(nan_strategy="disable")`` (which drops the weights, torchmetrics 1.9) it
    never looks at the values on the host, and a NaN stays visible.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: torch.Tensor) -> None:
        """Add ``value`` (any shape) with ``weight`` (broadcast to it)."""
        weight = torch.broadcast_to(torch.as_tensor(weight, device=value.device), value.shape).float()
        self.total += (value.float() * weight).sum()
        self.weight += weight.sum()

    def compute(self) -> torch.Tensor:
        """The weighted mean (``nan`` without any weight)."""
        return self.total / self.weight


class TaskAccuracy:
    """Exact-match accuracy per task over all samples of all ranks.

    Example:
        >>> accuracy = TaskAccuracy()
        >>> accuracy.update(["color", "shape"], torch.tensor([True, False]), [False, False])
        >>> accuracy.compute()
        {'color': 1.0, 'shape': 0.0}
    """

    def __init__(self) -> None:
        self._counts: dict[str, torch.Tensor] = {}  # task -> [correct, total] (on the batch's device)

    def update(self, tasks: Sequence[str], correct: torch.Tensor, padding: Sequence[bool] | None = None) -> None:
        """Count one batch.

        Args:
            tasks: Task name of each row.
            correct: ``[b]`` bool, whether each row's answer was right.
            padding: Rows that only keep ranks in step (not counted); ``None``: none.
        """
        padding = padding if padding is not None else [False] * len(tasks)
        for task in sorted({t for t, pad in zip(tasks, padding) if not pad}):
            pick = torch.tensor([t == task and not pad for t, pad in zip(tasks, padding)], device=correct.device)
            counts = torch.stack([(correct & pick).sum(), pick.sum()]).float()  # no host sync
            self._counts[task] = self._counts[task] + counts if task in self._counts else counts

    def compute(self) -> dict[str, float]:
        """Accuracy per task over every rank, sorted by task name (a collective when distributed)."""
        local = {task: counts.tolist() for task, counts in self._counts.items()}
        parts = [local]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
        totals: dict[str, list[float]] = {}
        for part in parts:
            for task, (correct, total) in part.items():
                summed = totals.setdefault(task, [0.0, 0.0])
                summed[0] += correct
                summed[1] += total
        return {task: correct / total for task, (correct, total) in sorted(totals.items()) if total}

    def reset(self) -> None:
        """Forget all counts."""
        self._counts = {}
