"""Worker for the 2-process CPU tests (gloo), not collected by pytest (no ``test_`` prefix).

    torchrun --standalone --nproc_per_node 2 tests/training/distributed_worker.py OUT LM_PATH

Runs, in the same processes: DDP for 4 steps; FSDP2 (``ModelParallelStrategy`` + default ``FullyShard``)
for 4 steps with a sharded checkpoint every 2 steps; FSDP2 resumed from the step-2 checkpoint up to
step 4; hybrid sharding with activation checkpointing (``FullyShard(shard_size=1)``, a ``[2, 1]`` mesh);
FSDP2 with a NaN on one rank rolled back by ``DivergenceGuard``; DDP and FSDP2 with LoRA on the
LM; and DDP and FSDP2 with QLoRA (the tiny LM saved at ``LM_PATH``,
loaded in 4-bit NF4). After each run every rank writes the full model weights and its losses to
``OUT``. The vision encoder is frozen so that sharded units mix frozen and trainable parameters.

    torchrun --standalone --nproc_per_node 2 tests/training/distributed_worker.py OUT LM_PATH --eval

runs the evaluation and dtype scenarios instead, all under FSDP2 (see ``main_eval``).
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import signal
import sys
from pathlib import Path
from unittest import mock

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torchmetrics import Metric

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_models
from tiny_models import TINY_LM, TINY_SIGLIP, build_tiny_vlm  # noqa: E402

from vlmkit.adapters import LoRA  # noqa: E402
from vlmkit.connectors import MLPProjection  # noqa: E402
from vlmkit.data import SyntheticVQADataModule  # noqa: E402
from vlmkit.data.mixture_datamodule import MixtureDataModule  # noqa: E402
from vlmkit.data.synthetic_sources import SyntheticSource  # noqa: E402
from vlmkit.eval.benchmarks import load_synthetic  # noqa: E402
from vlmkit.eval.datamodule import EvaluationDataModule  # noqa: E402
from vlmkit.eval.task import EvalTask  # noqa: E402
from vlmkit.llm import TransformersCausalLM  # noqa: E402
from vlmkit.model import VisionLanguageModel  # noqa: E402
from vlmkit.training.divergence import DivergenceGuard  # noqa: E402
from vlmkit.training.grad_norms import part_grad_norms  # noqa: E402
from vlmkit.training.module import VLMModule  # noqa: E402
from vlmkit.training.prediction_writer import PredictionWriter  # noqa: E402
from vlmkit.training.preemption import PreemptionCheckpoint  # noqa: E402
from vlmkit.training.sharding import FullyShard, fsdp1_policies  # noqa: E402
from vlmkit.vision import TransformersVisionEncoder  # noqa: E402

STEPS = 4


class Losses(Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


class GradNorms(Callback):
    """Each step's per-part gradient norms (``PartGradNorms``'s computation), written per rank."""

    def __init__(self, out: Path, name: str):
        self.path, self.norms = out / f"{name}_grad_norms_rank{{rank}}.json", []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.norms.append({k: float(v) for k, v in part_grad_norms(pl_module.vlm).items()})

    def on_train_end(self, trainer, pl_module):
        Path(str(self.path).format(rank=trainer.global_rank)).write_text(json.dumps(self.norms))


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
    callbacks: list[Callback] | None = None,
    max_steps: int = STEPS,
) -> VLMModule:
    L.seed_everything(0)
    losses = Losses()
    callbacks = [losses] + ([guard] if guard else []) + list(callbacks or [])
    if checkpoints:
        every = ModelCheckpoint(dirpath=out / f"{name}_ckpt", every_n_train_steps=2, save_top_k=-1, save_last=True)
        callbacks.append(every)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        precision=precision,
        strategy=strategy,
        max_steps=max_steps,
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
    return model


def main(out: Path, lm_path: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run("ddp", out, DDPStrategy(process_group_backend="gloo"), callbacks=[GradNorms(out, "ddp")])
    fsdp = dict(data_parallel_size=2, tensor_parallel_size=1, process_group_backend="gloo")
    run("fsdp", out, ModelParallelStrategy(**fsdp), checkpoints=True, callbacks=[GradNorms(out, "fsdp")])
    run("fsdp_resumed", out, ModelParallelStrategy(**fsdp), ckpt_path=str(out / "fsdp_ckpt" / "epoch=0-step=2.ckpt"))
    guard = DivergenceGuard(window=1, spike_factor=100.0, action="rollback")
    run("fsdp_rollback", out, ModelParallelStrategy(**fsdp), checkpoints=True, module_class=NaNOnRank1, guard=guard)
    hybrid = FullyShard(shard_size=1, activation_checkpointing=True)  # 2-D mesh [2, 1], blocks recomputed
    run("hsdp", out, ModelParallelStrategy(**fsdp), sharding=hybrid, callbacks=[GradNorms(out, "hsdp")])
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


# ---- evaluation, generation, dtypes and preemption under FSDP2 (``--eval``) ----

FSDP = dict(data_parallel_size=2, tensor_parallel_size=1, process_group_backend="gloo")
PROMPT = [[1, 5, 9, 11]]
SMALL = {"min_size": 16, "max_size": 32, "max_image_size": 32, "min_image_size": 16}


class ColorOracle(VLMModule):
    """Teacher-forced answers right on every ``color`` row and (a random model) wrong on the others."""

    def forward(self, batch):
        out = super().forward(batch)
        rows = [i for i, task in enumerate(batch.get("task", [])) if task == "color"]
        if rows:
            labels = batch["labels"][rows, 1:]  # [r, s-1]
            bonus = torch.nn.functional.one_hot(labels.clamp(min=0), out.logits.shape[-1]) * (labels >= 0)[..., None]
            out.logits[rows, :-1] += 100.0 * bonus.to(out.logits.dtype)
        return out


class PredictionChecksum(Metric):
    """``samples * 1e6 + sum of the predictions' character codes``: equal only for the same answers, each once."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("samples", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("codes", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions, references) -> None:
        self.samples += len(predictions)
        self.codes += sum(ord(c) for p in predictions for c in p)

    def compute(self):
        return self.samples * 1e6 + self.codes


def generation_tasks() -> EvaluationDataModule:
    """Generation-based evaluation: 5 prompts in batches of 2 (rank 1 gets a padding row)."""
    reader = functools.partial(load_synthetic, min_size=16, max_size=32)
    task = EvalTask("synthetic", reader, PredictionChecksum(), reader_kwargs={"num_samples": 5}, max_new_tokens=4)
    return EvaluationDataModule([task], batch_size=2, max_image_size=32, min_image_size=16)


def eval_module(module_class=VLMModule, **kwargs) -> VLMModule:
    return module_class(build_tiny_vlm(), max_new_tokens=4, **kwargs)


def task_data() -> SyntheticVQADataModule:
    """7 validation samples alternating colour/shape: with 2 ranks and batch size 1, rank 0 sees only colour."""
    return SyntheticVQADataModule(val_tasks=["color", "shape"], num_val=7, num_predict=5, batch_size=1, **SMALL)


def mixture_data(num_samples: int) -> MixtureDataModule:
    """Validation readers of ``num_samples`` pairs: rank 0 reads ceil(n / 2), rank 1 floor(n / 2)."""
    source = SyntheticSource("pair", max_length=96, max_image_size=32, min_image_size=16, num_samples=num_samples)
    return MixtureDataModule(val_sources=[source], batch_size=1)


def evaluation_trainer(devices: int, out: Path, **kwargs) -> L.Trainer:
    strategy = ModelParallelStrategy(**FSDP) if devices > 1 else "auto"
    return L.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=out, **kwargs,
    )  # fmt: skip


class SignalDuringStep2(VLMModule):
    """SIGUSR1 reaches rank 0 in the middle of step 2's forward and rank 1 after its backward."""

    def training_step(self, batch, batch_idx):
        if self.global_step == 1 and self.global_rank == 0:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().training_step(batch, batch_idx)

    def on_after_backward(self):
        super().on_after_backward()
        if self.global_step == 1 and self.global_rank == 1:
            os.kill(os.getpid(), signal.SIGUSR1)


class Dtypes(Callback):
    """Record storage dtypes (trainable, frozen, optimizer state) and compute dtypes (connector, decoder layer)."""

    def __init__(self):
        self.compute: dict[str, str] = {}

    def on_train_start(self, trainer, pl_module):
        vlm = pl_module.vlm
        layer = next(m for m in vlm.language_model.modules() if isinstance(m, vlm.language_model.block_class))
        vlm.connector.register_forward_hook(self._connector_output)
        layer.register_forward_pre_hook(self._decoder_input, with_kwargs=True)

    def _connector_output(self, module, args, output) -> None:
        self.compute.setdefault("connector_output", str(output.dtype))

    def _decoder_input(self, module, args, kwargs) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        self.compute.setdefault("decoder_input", str(hidden.dtype))

    def on_train_end(self, trainer, pl_module):
        params = list(pl_module.vlm.named_parameters())
        state = trainer.optimizers[0].state
        self.report = {
            "trainable": sorted({str(p.dtype) for _, p in params if p.requires_grad}),
            "frozen": sorted({str(p.dtype) for _, p in params if not p.requires_grad}),
            "optimizer_state": sorted({str(v.dtype) for s in state.values() for v in s.values() if v.dim() > 0}),
            "compute": self.compute,
        }


def generate_in_lockstep(out: Path) -> None:
    """Sharded generation where rank 0 stops at its first token and rank 1 never stops, then both run free."""
    rank = dist.get_rank()
    results = {}
    for lag in (0, 1):  # 1: the host reads the device one step late, as on CUDA
        vlm = build_tiny_vlm().eval()
        FullyShard().apply(vlm, vlm.block_classes(), init_device_mesh("cpu", (2,)))
        with mock.patch("vlmkit.model.generation.host_lag", lambda device, lag=lag: lag):
            first = vlm.generate(torch.tensor(PROMPT), max_new_tokens=6, stop_token_ids=range(512) if rank == 0 else [])
            second = vlm.generate(torch.tensor(PROMPT), max_new_tokens=6, stop_token_ids=[])
        results[lag] = [first.tolist(), second.tolist()]
    (out / f"generate_rank{rank}.json").write_text(json.dumps(results))


def main_eval(out: Path, lm_path: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=90))  # a hang fails after 90 s
    rank = dist.get_rank()
    generate_in_lockstep(out)

    # 20.5: per-task metrics and 20.6: even validation steps, against one process on the same data (in the test)
    results = {"tasks": evaluation_trainer(2, out).validate(eval_module(ColorOracle), task_data(), verbose=False)}
    for n in (5, 1):  # readers with 3 and 2 batches; with 1 and 0 batches
        results[f"mixture{n}"] = evaluation_trainer(2, out).validate(eval_module(), mixture_data(n), verbose=False)
    tasks = generation_tasks()
    results["generation"] = evaluation_trainer(2, out).validate(
        eval_module(evaluator=tasks.evaluator), tasks, verbose=False
    )
    (out / f"validate_rank{rank}.json").write_text(json.dumps(results))

    # 20.9 + 20.1: predictions of both ranks, each sample once, generated in lockstep
    writer = PredictionWriter(output_file=str(out / "predictions.jsonl"))
    evaluation_trainer(2, out, callbacks=[writer]).predict(eval_module(), task_data(), return_predictions=False)

    # 20.2 / 20.11: bf16 and NF4 compositions under FSDP2 with bf16 compute: fp32 master weights
    bf16 = FullyShard(param_dtype="bfloat16", reduce_dtype="float32")
    bf16_lm = functools.partial(TransformersCausalLM, config=TINY_LM, tokenizer="synthetic", torch_dtype="bfloat16")
    nf4_lm = functools.partial(
        TransformersCausalLM, lm_path, tokenizer="synthetic", quantization="nf4", compute_dtype="bfloat16"
    )
    for name, language_model in (("fsdp_bf16", bf16_lm), ("fsdp_qlora_bf16", nf4_lm)):
        torch.manual_seed(0)
        encoder = TransformersVisionEncoder(config=TINY_SIGLIP, torch_dtype="bfloat16")
        vlm = VisionLanguageModel(encoder, MLPProjection, language_model(), train_language_model=LoRA(rank=4, alpha=8))
        dtypes = Dtypes()
        run(name, out, ModelParallelStrategy(**FSDP), sharding=bf16, vlm=vlm, callbacks=[dtypes], max_steps=2)
        (out / f"{name}_dtypes_rank{rank}.json").write_text(json.dumps(dtypes.report))

    # 20.10: SIGUSR1 on both ranks at different points of step 2: all save at the same step, requeue, stop
    fake = out / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {out}/scontrol_calls.txt\n')
    (fake / "scontrol").chmod(0o755)
    with mock.patch.dict(os.environ, {"SLURM_JOB_ID": "4242", "PATH": f"{fake}:{os.environ['PATH']}"}):
        preemption = PreemptionCheckpoint()
        model = run(
            "fsdp_preempted", out, ModelParallelStrategy(**FSDP), module_class=SignalDuringStep2, callbacks=[preemption]
        )
    (out / f"preempted_rank{rank}.json").write_text(
        json.dumps([preemption.saved_path, preemption.saved_step, model.global_step])
    )
    run("fsdp_preempted_resumed", out, ModelParallelStrategy(**FSDP), ckpt_path=preemption.saved_path)


def main_gpu(out: Path) -> None:
    """CUDA/NCCL: DDP with bf16 autocast, FSDP2 with bf16 params / fp32 reduce + activation checkpointing, FSDP1."""
    out.mkdir(parents=True, exist_ok=True)
    n = torch.cuda.device_count()
    gpu = dict(accelerator="cuda", devices=n)
    run("gpu_ddp", out, DDPStrategy(), precision="bf16-mixed", **gpu)
    sharding = FullyShard(param_dtype="bfloat16", reduce_dtype="float32", activation_checkpointing=True)
    run("gpu_fsdp2", out, ModelParallelStrategy(data_parallel_size=n, tensor_parallel_size=1), sharding=sharding, **gpu)
    vlm = build_tiny_vlm(train_vision_encoder="frozen", train_language_model="full", gradient_checkpointing=True)
    fsdp1 = FSDPStrategy(**fsdp1_policies(vlm.block_classes()), use_orig_params=True)
    run("gpu_fsdp1", out, fsdp1, precision="bf16-mixed", vlm=vlm, **gpu)


if __name__ == "__main__":
    if "--gpu" in sys.argv:
        main_gpu(Path(sys.argv[1]))
    elif "--eval" in sys.argv:
        main_eval(Path(sys.argv[1]), sys.argv[2])
    else:
        main(Path(sys.argv[1]), sys.argv[2])
