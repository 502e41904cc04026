"""Sharding a ``VisionLanguageModel`` with FSDP2, block by block, from the parts' own block classes.

``FullyShard`` is what ``VLMModule.configure_model`` applies under Lightning's
``ModelParallelStrategy``: every instance of ``vlm.block_classes()`` (vision layers,
perceiver layers, cross-attention blocks, decoder layers) becomes one FSDP2 unit, then the
root takes the rest (embeddings, heads, connector projections). Nothing is hard-coded per
model family. FSDP2 shards per parameter, so frozen backbones, LoRA adapters and fully
trained parts mix freely inside one block. ``fsdp1_policies`` gives the same classes to
Lightning's FSDP1 ``FSDPStrategy`` (GPU only).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from vlmkit.trainability import apply_activation_checkpointing, is_checkpointed

try:
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
except ImportError:  # torch < 2.6
    from torch.distributed._composable.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

DType = Literal["float32", "bfloat16", "float16"]


class FullyShard:
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) settings for ``VLMModule(sharding=...)``.

    Use with ``ModelParallelStrategy(data_parallel_size=<world size>, tensor_parallel_size=1)``:
    vlmkit uses no tensor parallelism, and Lightning hands each rank of a data-parallel group
    different batches.

    Args:
        shard_size: Ranks that share one copy of the weights. ``None``: all ranks (full shard,
            ZeRO-3). ``k``: hybrid shard (HSDP) on a 2-D mesh ``[world / k, k]``: weights sharded
            within groups of ``k`` ranks (set ``k`` to the GPUs per node) and replicated across
            groups, so the all-gathers stay inside a node.
        param_dtype: Dtype of the gathered weights in forward/backward (``bfloat16`` on GPU);
            ``None`` keeps the stored dtype. The sharded weights stay as stored: trainable ones in
            fp32 (master weights, kept so by ``VLMModule.configure_model``), frozen ones as loaded
            (bf16, NF4); see ``vlmkit.training.precision``.
        reduce_dtype: Dtype of the gradient reduce-scatter/all-reduce (``float32`` for stability).
        reshard_after_forward: Free gathered weights after each block's forward (ZeRO-3) rather
            than keeping them until backward (ZeRO-2: more memory, fewer all-gathers).
        activation_checkpointing: Recompute each block's activations in backward, through the same switch as the
            model's ``gradient_checkpointing`` (:func:`~vlmkit.trainability.apply_activation_checkpointing`): when
            that is on already, this adds nothing (a warning says so).
        cpu_offload: Keep sharded weights, gradients and optimizer state in CPU memory (GPU runs).

    Example:
        >>> sharding = FullyShard(param_dtype="bfloat16", reduce_dtype="float32", activation_checkpointing=True)
    """

    def __init__(
        self,
        shard_size: int | None = None,
        param_dtype: DType | None = None,
        reduce_dtype: DType | None = None,
        reshard_after_forward: bool = True,
        activation_checkpointing: bool = False,
        cpu_offload: bool = False,
    ) -> None:
        if shard_size is not None and shard_size < 1:
            raise ValueError(f"shard_size must be >= 1 or None (all ranks), got {shard_size}")
        self.shard_size = shard_size
        self.param_dtype = param_dtype
        self.reduce_dtype = reduce_dtype
        self.reshard_after_forward = reshard_after_forward
        self.activation_checkpointing = activation_checkpointing
        self.cpu_offload = cpu_offload

    def mesh(self, device_mesh: DeviceMesh) -> DeviceMesh:
        """The 1-D (full shard) or 2-D ``[replicate, shard]`` (hybrid) mesh over the ranks of ``device_mesh``.

        Raises:
            ValueError: If ``device_mesh`` has a tensor-parallel dimension, or ``shard_size`` does not
                divide the world size.
        """
        from torch.distributed.device_mesh import init_device_mesh

        names = device_mesh.mesh_dim_names or ()
        if "tensor_parallel" in names and device_mesh["tensor_parallel"].size() > 1:
            raise ValueError(
                "FullyShard shards over all ranks but the device mesh has tensor_parallel_size="
                f"{device_mesh['tensor_parallel'].size()} (those ranks would get the same batches): use "
                "ModelParallelStrategy(data_parallel_size=<world size>, tensor_parallel_size=1)"
            )
        world = device_mesh.size()
        if self.shard_size is None or self.shard_size == world:
            return init_device_mesh(device_mesh.device_type, (world,), mesh_dim_names=("shard",))
        if world % self.shard_size:
            raise ValueError(f"shard_size={self.shard_size} does not divide the world size {world}")
        shape = (world // self.shard_size, self.shard_size)
        return init_device_mesh(device_mesh.device_type, shape, mesh_dim_names=("replicate", "shard"))

    def apply(self, model: nn.Module, block_classes: tuple[type[nn.Module], ...], device_mesh: DeviceMesh) -> None:
        """Shard ``model`` in place: each instance of ``block_classes``, then the root.

        Args:
            model: The model (not yet sharded; a second call is a no-op).
            block_classes: The repeated blocks, e.g. ``vlm.block_classes()``.
            device_mesh: Lightning's device mesh (``LightningModule.device_mesh``).
        """
        if isinstance(model, FSDPModule):
            return
        mesh = self.mesh(device_mesh)
        mp_policy = MixedPrecisionPolicy(
            param_dtype=getattr(torch, self.param_dtype) if self.param_dtype else None,
            reduce_dtype=getattr(torch, self.reduce_dtype) if self.reduce_dtype else None,
        )
        options = {"mesh": mesh, "mp_policy": mp_policy}
        if self.cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy()
        if self.activation_checkpointing and block_classes:
            if is_checkpointed(model):
                warnings.warn(
                    "FullyShard(activation_checkpointing=True) on a model built with gradient_checkpointing=True: its "
                    "blocks already recompute their activations, so FullyShard adds no second checkpoint (set only "
                    "one of the two)",
                    stacklevel=2,
                )
            apply_activation_checkpointing(model, block_classes)  # the one switch: never wraps a block twice
        blocks = [m for m in model.modules() if isinstance(m, block_classes)] if block_classes else []
        for block in blocks:
            fully_shard(block, reshard_after_forward=self.reshard_after_forward, **options)
        fully_shard(model, **options)


def parameters_without_gradient(module: nn.Module) -> list[str]:
    """Names of trainable parameters that received no gradient in the last backward pass.

    Under FSDP2 their optimizer state is never created, so a sharded checkpoint lacks it and
    resuming from it fails (``Missing key in checkpoint state_dict: optimizer_0.state...``);
    such weights (e.g. SigLIP's pooling head, unused by a VLM) should be frozen or removed.
    """
    return [name for name, p in module.named_parameters() if p.requires_grad and p.grad is None]


def fsdp1_policies(block_classes: tuple[type[nn.Module], ...]) -> dict[str, set[type[nn.Module]]]:
    """The wrapping policy for Lightning's FSDP1 ``FSDPStrategy`` (GPU only): one FSDP unit per block.

    Activation checkpointing is not part of it: it is the model's ``gradient_checkpointing`` under every strategy
    (one switch, :func:`~vlmkit.trainability.apply_activation_checkpointing`).

    Example:
        >>> from lightning.pytorch.strategies import FSDPStrategy
        >>> policies = fsdp1_policies(vlm.block_classes())  # doctest: +SKIP
        >>> strategy = FSDPStrategy(**policies, sharding_strategy="HYBRID_SHARD")  # doctest: +SKIP
    """
    return {"auto_wrap_policy": set(block_classes)}
