"""``PartGradNorms``: the gradient norm of each part (vision encoder, connector, fusion, LM) in TensorBoard.

The paper's Finding 3 is about training that diverges once the backbones are unfrozen; which part's gradients grow
first is what to watch. The norms are taken before gradient clipping, only on the steps Lightning writes logs
(``log_every_n_steps``), so the other steps cost nothing and no step waits on the device.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch import nn

PARTS = ("vision_encoder", "connector", "fusion", "language_model")
"""The parts of a ``VisionLanguageModel`` whose gradient norms are logged, as ``grad_norm/<part>``."""


def _local(grad: torch.Tensor) -> torch.Tensor:
    return grad.to_local() if hasattr(grad, "to_local") else grad


def _shard_groups(grad: torch.Tensor) -> list[Any]:
    """The process groups over which a sharded (DTensor) gradient's squared norm must be summed."""
    mesh, placements = getattr(grad, "device_mesh", None), getattr(grad, "placements", ())
    if mesh is None:
        return []
    return [mesh.get_group(dim) for dim, placement in enumerate(placements) if placement.is_shard()]


def part_grad_norms(model: nn.Module, parts: tuple[str, ...] = PARTS) -> dict[str, torch.Tensor]:
    """L2 norm of the gradients of each part of ``model`` that has any, and of all of them (``total``).

    Sharded (FSDP2) gradients are reduced over the ranks that hold their shards: one collective per mesh
    dimension for all parts together. The norms stay on the device (no host sync).

    Returns:
        ``{part: norm}`` (0-d float32 tensors) for the parts with gradients, plus ``total``.
    """
    squares, names, groups = [], [], []
    for name in parts:
        module = getattr(model, name, None)
        grads = [p.grad for p in module.parameters() if p.grad is not None] if isinstance(module, nn.Module) else []
        if not grads:
            continue
        groups = groups or _shard_groups(grads[0])
        norms = torch._foreach_norm([_local(g).float() for g in grads])
        squares.append(torch.stack(norms).square().sum())
        names.append(name)
    if not names:
        return {}
    stacked = torch.stack(squares)  # [parts]
    for group in groups:
        dist.all_reduce(stacked, group=group)
    result = dict(zip(names, stacked.sqrt()))
    result["total"] = stacked.sum().sqrt()
    return result


class PartGradNorms(Callback):
    """Log ``grad_norm/<part>`` and ``grad_norm/total`` (before clipping) on the steps Lightning logs.

    Args:
        every_n_steps: Log every this many optimizer steps; default: the trainer's ``log_every_n_steps`` (the steps
            Lightning writes its own logs on).
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def _due(self, trainer: L.Trainer) -> bool:
        if self.every_n_steps is None:  # exactly the steps whose logs Lightning writes
            return trainer._logger_connector.should_update_logs
        return trainer.global_step % self.every_n_steps == 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        """Compute and log the norms when due (called after AMP unscaling and before clipping)."""
        if not self._due(trainer):
            return
        model = getattr(pl_module, "vlm", pl_module)
        norms = part_grad_norms(model)
        if norms:
            pl_module.log_dict({f"grad_norm/{k}": v for k, v in norms.items()}, on_step=True, on_epoch=False)
