"""Worker of the GPU smoke tests (NCCL), not collected by pytest (no ``test_`` prefix).

    torchrun --standalone --nproc_per_node <GPUs> tests/gpu/gpu_worker.py OUT

FSDP2 on every visible GPU (``FSDP2Strategy`` sized from the world, bf16 compute / fp32 reduce, activation
checkpointing): 4 steps in one go with a sharded checkpoint every 2 steps, then the same run resumed from the step-2
checkpoint. Each rank writes the full weights and its losses to ``OUT`` (see ``tests/training/distributed_worker.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from distributed_worker import run  # noqa: E402

from vlmkit.training import FSDP2Strategy, FullyShard  # noqa: E402


def main(out: Path) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    gpu = dict(accelerator="cuda", devices=torch.cuda.device_count())
    sharding = FullyShard(param_dtype="bfloat16", reduce_dtype="float32", activation_checkpointing=True)
    run("nccl_fsdp2", out, FSDP2Strategy(), checkpoints=True, sharding=sharding, **gpu)
    resume = str(next((out / "nccl_fsdp2_ckpt").glob("*-step=2.ckpt")))  # epoch 0 or 1, by the GPU count
    run("nccl_fsdp2_resumed", out, FSDP2Strategy(), ckpt_path=resume, sharding=sharding, **gpu)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
