"""``FSDP2Strategy``: Lightning's ``ModelParallelStrategy`` with every rank data-parallel, sized from the world.

Lightning's defaults make ``data_parallel_size`` the number of nodes and ``tensor_parallel_size`` the GPUs per node
(2-D parallelism); vlmkit shards with FSDP2 only (:class:`~vlmkit.training.FullyShard`), so every rank must read its
own batches: the data-parallel size is the world size, whatever the number of nodes and GPUs, and a recipe needs
no GPU count.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import ModelParallelStrategy


class FSDP2Strategy(ModelParallelStrategy):
    """Data-parallel FSDP2: ``ModelParallelStrategy(data_parallel_size=<world size>, tensor_parallel_size=1)``.

    Args:
        data_parallel_size: Ranks that read different batches; ``"auto"``: the world size (nodes x devices).
        tensor_parallel_size: Kept at 1 (vlmkit applies no tensor parallelism; ``FullyShard`` refuses more).
        save_distributed_checkpoint: One checkpoint file per rank (a folder) instead of one consolidated file.
        process_group_backend: ``nccl``/``gloo``; default: Lightning's choice for the device.
        timeout: Timeout of collective operations.

    Example (YAML)::

        trainer:
          strategy:
            class_path: vlmkit.training.FSDP2Strategy
            init_args: {save_distributed_checkpoint: true}
    """

    def __init__(
        self,
        data_parallel_size: int | Literal["auto"] = "auto",
        tensor_parallel_size: int = 1,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(
            data_parallel_size=data_parallel_size,
            tensor_parallel_size=tensor_parallel_size,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )

    def setup_environment(self) -> None:
        """Size the data-parallel group from the world (``num_nodes x devices / tensor_parallel_size``), then set up."""
        if self._data_parallel_size == "auto":
            world_size = self.num_nodes * self.num_processes
            if world_size % self._tensor_parallel_size:
                raise ValueError(
                    f"tensor_parallel_size={self._tensor_parallel_size} does not divide the world size {world_size}"
                )
            self._data_parallel_size = world_size // self._tensor_parallel_size
        super().setup_environment()
