"""Worker for the 2-process CPU tests (gloo), not collected by pytest (no ``test_`` prefix).

    torchrun --standalone --nproc_per_node 2 tests/training/distributed_worker.py OUT LM_PATH

Runs, in the same processes: DDP for 4 steps; FSDP2 (``ModelParallelStrategy`` + default ``FullyShard``)
for 4 steps with a sharded checkpoint every 2 steps; FSDP2 resumed from the step-2 checkpoint up to
step 4; hybrid sharding with activation checkpointing (``FullyShard(shard_size=1)``, a ``[2, 1]`` mesh);
FSDP2 with a NaN on one rank rolled back by ``DivergenceGuard``; DDP and FSDP2 with LoRA on the
LM; and DDP and FSDP2 with QLoRA (the tiny LM saved at ``LM_PATH``,
loaded in 4-bit NF4). After each run every rank writes the full model weights and its losses to
``OUT``. The vision encoder is frozen so that sharded units mix frozen and trainable parameters.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_models
from tiny_models import TINY_SIGLIP, build_tiny_vlm  # noqa: E402

from vlmkit.adapters import LoRA  # noqa: E402
from vlmkit.connectors import MLPProjection  # noqa: E402
from vlmkit.data import SyntheticVQADataModule  # noqa: E402
from vlmkit.llm import TransformersCausalLM  # noqa: E402
from vlmkit.model import VisionLanguageModel  # noqa: E402
from vlmkit.training.divergence import DivergenceGuard  # noqa: E402
from vlmkit.training.module import VLMModule  # noqa: E402
from vlmkit.training.sharding import FullyShard, fsdp1_policies  # noqa: E402
from vlmkit.vision import TransformersVisionEncoder  # noqa: E402

STEPS = 4


class Losses(Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


class NaNOnRank1(VLMModule):
    """A NaN loss on rank 1 only, at step 3 (the step-2 checkpoint is the one to roll back to)."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step + 1 == 3 and self.global_rank == 1 else loss


def run(
    name: str,
    out: Path,
    strategy,
    ckpt_path: str | None = None,
    checkpoints: bool = False,
    sharding=None,
    train_language_model="full",
    accelerator: str = "cpu",
    precision: str = "32-true",
    devices: int = 2,
    vlm=None,
    module_class=VLMModule,
    guard: DivergenceGuard | None = None,
) -> None:
    L.seed_everything(0)
    losses = Losses()
    callbacks: list[Callback] = [losses] + ([guard] if guard else [])
    if checkpoints:
        every = ModelCheckpoint(dirpath=out / f"{name}_ckpt", every_n_train_steps=2, save_top_k=-1, save_last=True)
        callbacks.append(every)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        precision=precision,
        strategy=strategy,
        max_steps=STEPS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=checkpoints,
        gradient_clip_val=1.0,
        default_root_dir=out,
        callbacks=callbacks,
    )
    vlm = vlm or build_tiny_vlm(train_vision_encoder="frozen", train_language_model=train_language_model)
    model = module_class(vlm, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), sharding=sharding)
    data = SyntheticVQADataModule(num_train=12, batch_size=2, min_size=16, max_size=32, max_image_size=32, num_val=2)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    rank = dist.get_rank()
    if not isinstance(strategy, FSDPStrategy):  # full (unsharded) weights on every rank: a collective under FSDP2
        state = get_model_state_dict(model.vlm, options=StateDictOptions(full_state_dict=True))
        state = {k: v.detach().float().cpu().clone() for k, v in state.items()}
        torch.save(state, out / f"{name}_weights_rank{rank}.pt")
    (out / f"{name}_losses_rank{rank}.json").write_text(json.dumps(losses.losses))
    if guard is not None:
        (out / f"{name}_guard_rank{rank}.json").write_text(json.dumps([guard.rollbacks, guard.events]))
    dist.barrier()


def main(out: Path, lm_path: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run("ddp", out, DDPStrategy(process_group_backend="gloo"))
    fsdp = dict(data_parallel_size=2, tensor_parallel_size=1, process_group_backend="gloo")
    run("fsdp", out, ModelParallelStrategy(**fsdp), checkpoints=True)
    run("fsdp_resumed", out, ModelParallelStrategy(**fsdp), ckpt_path=str(out / "fsdp_ckpt" / "epoch=0-step=2.ckpt"))
    guard = DivergenceGuard(window=1, spike_factor=100.0, action="rollback")
    run("fsdp_rollback", out, ModelParallelStrategy(**fsdp), checkpoints=True, module_class=NaNOnRank1, guard=guard)
    hybrid = FullyShard(shard_size=1, activation_checkpointing=True)  # 2-D mesh [2, 1], blocks recomputed
    run("hsdp", out, ModelParallelStrategy(**fsdp), sharding=hybrid)
    lora = LoRA(rank=4, alpha=8, dropout=0.0)  # frozen base + adapters + trainable new-token rows in one block
    run("ddp_lora", out, DDPStrategy(process_group_backend="gloo"), train_language_model=lora)
    run("fsdp_lora", out, ModelParallelStrategy(**fsdp), train_language_model=lora)
    # QLoRA: the LM's linear layers in 4-bit NF4 (bitsandbytes, CPU), LoRA on top
    lm = functools.partial(
        TransformersCausalLM, lm_path, tokenizer="synthetic", quantization="nf4", compute_dtype="float32"
    )
    for name, strategy in (
        ("ddp_qlora", DDPStrategy(process_group_backend="gloo")),
        ("fsdp_qlora", ModelParallelStrategy(**fsdp)),
    ):
        torch.manual_seed(0)
        vlm = VisionLanguageModel(
            TransformersVisionEncoder(config=TINY_SIGLIP), MLPProjection, lm(), train_language_model=lora
        )
        run(name, out, strategy, vlm=vlm)


def main_gpu(out: Path) -> None:
    """CUDA/NCCL: DDP with bf16 autocast, FSDP2 with bf16 params / fp32 reduce + activation checkpointing, FSDP1."""
    out.mkdir(parents=True, exist_ok=True)
    n = torch.cuda.device_count()
    gpu = dict(accelerator="cuda", devices=n)
    run("gpu_ddp", out, DDPStrategy(), precision="bf16-mixed", **gpu)
    sharding = FullyShard(param_dtype="bfloat16", reduce_dtype="float32", activation_checkpointing=True)
    run("gpu_fsdp2", out, ModelParallelStrategy(data_parallel_size=n, tensor_parallel_size=1), sharding=sharding, **gpu)
    vlm = build_tiny_vlm(train_vision_encoder="frozen", train_language_model="full")
    fsdp1 = FSDPStrategy(**fsdp1_policies(vlm.block_classes()), use_orig_params=True)
    run("gpu_fsdp1", out, fsdp1, precision="bf16-mixed", vlm=vlm, **gpu)


if __name__ == "__main__":
    if "--gpu" in sys.argv:
        main_gpu(Path(sys.argv[1]))
    else:
        main(Path(sys.argv[1]), sys.argv[2])
