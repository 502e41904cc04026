"""The dtype policy: fp32 master weights for what trains, the load dtype for what is frozen, bf16 compute.

- **Storage.** Trainable parameters (adapters, the connector, new token rows, fully trained parts) are
  kept in fp32, so their gradients and the optimizer state (AdamW moments) are fp32 too. Frozen weights
  keep the dtype they were loaded in (``torch_dtype: bfloat16``, NF4), which is where the memory goes.
  ``VLMModule.configure_model`` applies this under every strategy (single device, DDP, FSDP2), before
  sharding: FSDP2 then finds one dtype among the trainable parameters of each unit.
- **Compute.** bf16 comes from ``precision: bf16-mixed`` (autocast; single device, DDP, FSDP2) or, under
  FSDP2, from ``FullyShard(param_dtype="bfloat16")`` (weights cast as they are all-gathered, gradients
  reduced in ``reduce_dtype``, the sharded fp32 weights stay the master copy).
- ``precision: bf16-true`` makes Lightning cast every weight to bf16 after ``configure_model``; the trainable
  ones are cast back to fp32 before the optimizer is built (``VLMModule.configure_optimizers``), so they and
  the optimizer state stay fp32 there too, while frozen weights become bf16. Layers whose weights train then
  compute in fp32; ``bf16-mixed`` computes in bf16 everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

HALF_PRECISION_WEIGHTS = ("bf16-true", "16-true", "bf16", "16", "half")
"""Lightning precisions that cast every weight to half precision (after ``configure_model``)."""


def keep_trainable_in_fp32(module: nn.Module) -> list[str]:
    """Store every trainable floating-point parameter of ``module`` in fp32, in place (the same ``Parameter``).

    Works on FSDP2-sharded modules too (through ``nn.Module._apply``, which FSDP2 follows by re-registering
    its sharded parameters), so it can run after sharding and after Lightning's precision conversion.

    Returns:
        The names of the parameters that were cast (empty when all were fp32 already).
    """
    cast = [
        n
        for n, p in module.named_parameters()
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32
    ]
    if cast:
        module._apply(lambda t: t.float() if t.requires_grad and t.is_floating_point() else t)
    return cast


def half_precision_note(precision: str | None) -> str | None:
    """What a Lightning ``precision`` that casts all weights to half precision means here, else ``None``."""
    if str(precision) not in HALF_PRECISION_WEIGHTS:
        return None
    return (
        f"precision={precision!r}: frozen weights are cast to half precision; trainable weights and the optimizer "
        "state stay fp32 (master weights), so the layers holding them compute in fp32. precision='bf16-mixed' "
        "(or FullyShard(param_dtype='bfloat16') under FSDP2) computes in bf16 everywhere"
    )
