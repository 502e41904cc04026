"""DataLoader settings that follow the trainer's device: worker processes and pinned memory.

On a GPU the model waits for data unless batches are prepared in worker processes and copied from page-locked
memory (Lightning copies with ``non_blocking=True``, which only overlaps with compute from pinned memory). On a CPU
the model and the data share the same cores, so vlmkit's in-memory synthetic data stays in the main process.
"""

from __future__ import annotations

import os
from typing import Any

MAX_AUTO_WORKERS = 4
"""Most worker processes ``num_workers=None`` gives each training process."""


def loader_options(trainer: Any, num_workers: int | None = None, pin_memory: bool | None = None) -> dict[str, Any]:
    """``num_workers``, ``pin_memory`` and ``persistent_workers`` for a ``DataLoader`` feeding ``trainer``.

    Args:
        trainer: The Lightning ``Trainer`` (``None`` outside one: CPU defaults).
        num_workers: Worker processes; ``None``: 0 when training on CPU, else ``min(4, CPU cores / processes of
            this node)``.
        pin_memory: Page-locked batches; ``None``: when the trainer runs on CUDA.

    Raises:
        ValueError: If ``num_workers`` is negative.
    """
    on_cuda = _on_cuda(trainer)
    if num_workers is None:
        processes = max(1, int(getattr(trainer, "num_devices", 1) or 1))
        num_workers = min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) // processes) if on_cuda else 0
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (or None for automatic), got {num_workers}")
    return {
        "num_workers": num_workers,
        "pin_memory": on_cuda if pin_memory is None else pin_memory,
        "persistent_workers": num_workers > 0,
    }


def _on_cuda(trainer: Any) -> bool:
    from lightning.pytorch.accelerators import CUDAAccelerator

    return isinstance(getattr(trainer, "accelerator", None), CUDAAccelerator)
