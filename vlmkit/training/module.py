"""``VLMModule``: the training system around a ``VisionLanguageModel``.

The model decides what is trainable (at composition); this module only turns the
trainable parameters into per-part optimizer groups, computes the answer-only loss,
and logs loss, learning rates, throughput and answer accuracy. It depends on nothing but its
arguments and the batches it is given (see :class:`VLMModule` for their keys): evaluation by
generation is a separate piece it may be given (:class:`~vlmkit.eval.evaluator.GenerationEvaluator`).
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from vlmkit.checks import host_reads_are_free
from vlmkit.eval.evaluator import GenerationEvaluator
from vlmkit.eval.generation import answer
from vlmkit.model import VisionLanguageModel
from vlmkit.text.template import IGNORE_INDEX
from vlmkit.trainability import parameter_table
from vlmkit.training.checkpoints import drop_frozen, load_model_weights, restore_frozen
from vlmkit.training.precision import half_precision_note, keep_trainable_in_fp32
from vlmkit.training.sharding import FullyShard, parameters_without_gradient
from vlmkit.training.validation_metrics import TaskAccuracy, WeightedMean


def _built_from_config() -> bool:
    """Whether LightningCLI (or ``load_from_checkpoint``) passes the config as hyperparameters."""
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # private API moved: keep everything
        return True
    return _given_hyperparameters.get() is not None


PARTS = ("vision_encoder", "connector", "fusion", "language_model")
EVAL_STAGES = ("val", "test")


def _real_rows(padding: list[bool] | None, rows: int, device: torch.device) -> torch.Tensor:
    """``[b]`` bool: rows that count (``batch["padding"]`` only keeps ranks in step)."""
    if padding is None:
        return torch.ones(rows, dtype=torch.bool, device=device)
    return ~torch.tensor(padding, dtype=torch.bool, device=device)


def answer_loss(logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy over labelled tokens only (``labels != -100``).

    The labels are shifted rather than the logits (no copy of the largest activation of the step).

    Args:
        logits: ``[b, s, vocab]``, or ``[b, k, vocab]`` at ``positions`` only.
        labels: ``[b, s]``; token ``t`` is predicted from position ``t - 1``.
        positions: ``[k]`` the positions ``logits`` were computed at (:func:`scored_positions`); None: all.
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # [b, s]: the token each position predicts
    if positions is not None:
        targets = targets[:, positions]  # [b, k]
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


def prefer_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Run an ``Adam``/``AdamW`` left at torch's default implementation with its fused kernel; True if it switched.

    torch picks the per-tensor loop on CPU (foreach on CUDA); the fused kernel updates each tensor in one pass, with no
    temporaries the size of the largest weight (the embeddings), which makes the step faster and lowers peak memory.
    The update is the same. Only groups that chose neither ``fused`` nor ``foreach``, with every parameter a plain
    floating-point tensor on CPU or CUDA, switch, before the first step (the state is then created for the kernel).
    """
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or optimizer.state:
        return False
    groups = optimizer.param_groups
    chose = any(g.get("fused") is not None or g.get("foreach") is not None or g.get("differentiable") for g in groups)
    params = [p for g in groups for p in g["params"]]
    supported = all(
        type(p) in (torch.Tensor, nn.Parameter) and p.is_floating_point() and p.device.type in ("cpu", "cuda")
        for p in params
    )
    if chose or not supported or not params:
        return False
    for group in groups:
        group["fused"], group["foreach"] = True, False
    optimizer.defaults["fused"] = True
    optimizer._step_supports_amp_scaling = True  # as the constructor sets it for fused=True (GradScaler)
    return True


def scored_positions(labels: torch.Tensor) -> torch.Tensor | None:
    """``[k]`` positions whose next token is labelled in some row: the only logits an answer-only loss reads.

    Prompts, images and padding need no logits, and the head (``d x vocab``) is the largest matmul of a small LM, so
    the model computes logits at these positions only. None (all positions) where reading the labels would wait for
    the device, or when nothing is labelled.
    """
    if not host_reads_are_free(labels):
        return None
    positions = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().flatten()  # [k]
    if len(positions) in (0, labels.shape[1]):
        return None
    return positions


def answer_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over labelled tokens, and their number (both ``[]``, no host sync)."""
    target = labels[:, 1:].flatten()
    total = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total, (target != IGNORE_INDEX).sum()


def answer_exact_match(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``True`` when every labelled token is the argmax prediction ``[b]``.

    With teacher forcing this equals greedy decoding reproducing the whole answer
    (and its end-of-utterance token), at the cost of one forward pass.
    """
    target = labels[:, 1:]  # [b, s-1]
    labelled = target != IGNORE_INDEX
    hit = (logits[:, :-1].argmax(-1) == target) | ~labelled
    return hit.all(-1) & labelled.any(-1)


class VLMModule(L.LightningModule):
    """Train, evaluate and query a ``VisionLanguageModel``.

    Batches are dicts: ``input_ids`` and ``attention_mask`` ``[b, s]``, ``labels`` ``[b, s]`` (``-100`` where
    untrained; training, validation, test), and optionally ``pixel_values [n, 3, H, W]`` with ``patch_mask``,
    ``position_ids`` and ``segment_ids`` (packed rows), ``task`` (a name per row: per-task accuracy), ``padding`` (rows
    that only keep ranks in step and count nowhere). Prediction batches are left-padded prompts; ``question``,
    ``answer``, ``task`` and ``sample_index`` are copied into the prediction records. Any ``DataLoader`` of such
    batches works; vlmkit's data modules produce them.

    Args:
        vlm: The composed model (trainability already declared on it).
        optimizer: Optimizer factory, called with the per-part parameter groups.
        scheduler: Optional scheduler factory, stepped every optimizer step.
        learning_rates: Per-part learning rates, keyed by ``vision_encoder``,
            ``connector``, ``fusion`` or ``language_model``; other parts use the
            optimizer's ``lr``.
        max_new_tokens: Generation length in ``predict``.
        init_from: A Lightning checkpoint (file or sharded folder) whose model weights, and only
            those, are loaded before training (stage 2 from stage 1); ``--ckpt_path`` resumes instead.
            Read with ``weights_only=True``: a file that needs full unpickling is refused.
        save_trainable_only: Leave frozen parameters out of checkpoints (they come back from the
            model's own config on load, after a check that exactly those keys are missing).
        sharding: FSDP2 settings applied in ``configure_model`` under ``ModelParallelStrategy``
            (default ``FullyShard()``: full shard, stored dtype); ignored by other strategies.
        trust_init_from: Unpickle ``init_from`` in full (``weights_only=False``), with a warning. Unpickling runs
            any code the file holds: only for checkpoints you made or trust.
        evaluator: Scores the validation/test batches it owns (prompt batches of benchmark tasks) by generation;
            every other batch is scored by teacher forcing. ``vlmkit`` gives the module the evaluator of its data
            (``EvaluationDataModule``, ``TrainWithEvaluation``); in Python, pass ``data.evaluator``.
    """

    def __init__(
        self,
        vlm: VisionLanguageModel,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        learning_rates: dict[str, float] | None = None,
        max_new_tokens: int = 16,
        init_from: str | None = None,
        save_trainable_only: bool = False,
        sharding: FullyShard | None = None,
        trust_init_from: bool = False,
        evaluator: GenerationEvaluator | None = None,
    ) -> None:
        super().__init__()
        # Under LightningCLI the hparams are the YAML config, which rebuilds `vlm` in `load_from_checkpoint`;
        # built in Python, the module itself is not duplicated into the checkpoint's hparams, nor are the optimizer
        # and scheduler callables (classes or functions would make the checkpoint need full unpickling).
        python_only = ["vlm", "sharding", "optimizer", "scheduler", "evaluator"]
        self.save_hyperparameters(ignore=["evaluator"] if _built_from_config() else python_only)
        unknown = set(learning_rates or {}) - set(PARTS)
        if unknown:
            raise ValueError(f"learning_rates has unknown parts {sorted(unknown)}; expected keys among {list(PARTS)}")
        self.vlm = vlm
        composition = self.hparams.get("vlm")
        if isinstance(composition, dict) and "class_path" in composition and getattr(vlm, "config", None) is None:
            vlm.config = composition  # the recipe's model.vlm: what VisionLanguageModel.save_pretrained writes
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.learning_rates = dict(learning_rates or {})
        self.max_new_tokens = max_new_tokens
        self.init_from = init_from
        self.save_trainable_only = save_trainable_only
        self.sharding = sharding
        self.trust_init_from = trust_init_from
        self.evaluator = evaluator
        self._initialized_from: str | None = None
        self._checked_gradients = False
        self._last_step_time: float | None = None
        # teacher-forced metrics per stage, summed over every sample of every rank (padding rows excluded)
        self.eval_loss = nn.ModuleDict({s: WeightedMean() for s in EVAL_STAGES})
        self.eval_accuracy = nn.ModuleDict({s: WeightedMean() for s in EVAL_STAGES})
        self.task_accuracy = {stage: TaskAccuracy() for stage in EVAL_STAGES}

    @property
    def evaluation_results(self) -> dict[str, float]:
        """The evaluator's scores of its last epoch, by task name (``{}`` without an evaluator)."""
        return dict(self.evaluator.results) if self.evaluator is not None else {}

    def forward(self, batch: dict[str, Any], logits_to_keep: int | torch.Tensor = 0):
        """Model outputs for a collated batch (logits at ``logits_to_keep`` only, see ``VisionLanguageModel``)."""
        return self.vlm(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("pixel_values"),
            batch.get("patch_mask"),
            position_ids=batch.get("position_ids"),  # packed rows (vlmkit.data.sequence_packing)
            segment_ids=batch.get("segment_ids"),
            logits_to_keep=logits_to_keep,
        )

    def configure_model(self) -> None:
        """Load ``init_from`` weights (once), keep trainable weights in fp32, then shard per block (FSDP2).

        The dtype policy (``vlmkit.training.precision``): trainable parameters, hence gradients and optimizer
        state, in fp32 (master weights); frozen weights as loaded (bf16, NF4); bf16 compute from
        ``precision: bf16-mixed`` or ``FullyShard(param_dtype="bfloat16")``.
        """
        if self.init_from is not None and self._initialized_from != self.init_from:
            opt_in = "pass --model.trust_init_from true (VLMModule(trust_init_from=True))"
            load_model_weights(self.vlm, self.init_from, trust=self.trust_init_from, opt_in=opt_in)
            self._initialized_from = self.init_from
        note = half_precision_note(getattr(self._trainer, "precision", None))
        if note:
            rank_zero_info(note)
        cast = keep_trainable_in_fp32(self.vlm)
        if cast:
            rank_zero_info(f"{len(cast)} trainable parameters stored in fp32 (master weights), e.g. {cast[0]}")
        if self.device_mesh is not None:
            if self.save_trainable_only:
                raise ValueError("save_trainable_only needs single-file checkpoints: not available with sharding")
            (self.sharding or FullyShard()).apply(self.vlm, self.vlm.block_classes(), self.device_mesh)

    def on_after_backward(self) -> None:
        """Once, under sharding: warn about trainable weights without gradient (sharded checkpoints cannot resume)."""
        if self.device_mesh is None or self._checked_gradients:
            return
        self._checked_gradients = True
        unused = parameters_without_gradient(self.vlm)
        if unused:
            rank_zero_warn(
                f"{len(unused)} trainable parameters got no gradient (e.g. {', '.join(unused[:3])}): FSDP2 creates no "
                "optimizer state for them, so this run's sharded checkpoints will not resume; freeze or remove them"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """With ``save_trainable_only``, drop the frozen parameters (their keys are recorded)."""
        if self.save_trainable_only:
            drop_frozen(checkpoint, self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refill the frozen parameters a trainable-only checkpoint left out (checking they are exactly those)."""
        restore_frozen(checkpoint, self)

    def on_fit_start(self) -> None:
        """Print what trains: parameters per part, as declared at composition."""
        rank_zero_info("\n" + parameter_table(self.vlm, PARTS))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Answer-only loss; logs loss, learning rates and tokens/images per second."""
        positions = scored_positions(batch["labels"])  # logits only where the loss reads them
        logits = self(batch, logits_to_keep=0 if positions is None else positions).logits
        loss = answer_loss(logits, batch["labels"], positions)
        size = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        now = time.perf_counter()
        if self._last_step_time is not None:
            elapsed = now - self._last_step_time
            self.log("train/tokens_per_sec", batch["attention_mask"].sum().float() / elapsed, batch_size=size)
            num_images = batch["pixel_values"].shape[0] if "pixel_values" in batch else 0
            self.log("train/images_per_sec", num_images / elapsed, batch_size=size)
        self._last_step_time = now
        if self.trainer is not None and self.trainer.optimizers:
            for group in self.trainer.optimizers[0].param_groups:
                self.log(f"train/lr_{group['name']}", group["lr"], batch_size=size)
        return loss

    def on_train_epoch_start(self) -> None:
        """Restart the throughput clock (excludes validation time)."""
        self._last_step_time = None

    def _evaluate(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        """Teacher-forced loss (mean over all answer tokens) and exact-match accuracy (over samples), per task too.

        Rows marked ``padding`` (they keep ranks in step, see ``vlmkit.data.even_ranks``) run but do not count,
        so the values over N ranks equal those of one process on the same data.
        """
        logits = self(batch).logits
        padding = batch.get("padding")
        real = _real_rows(padding, logits.shape[0], logits.device)  # [b]
        labels = batch["labels"].masked_fill(~real[:, None], IGNORE_INDEX)
        loss_sum, tokens = answer_loss_sum(logits, labels)
        loss = loss_sum / tokens.clamp(min=1)
        correct = answer_exact_match(logits, labels)  # [b]
        self.eval_loss[stage].update(loss, tokens)
        self.eval_accuracy[stage].update(correct.float(), real.float())
        self.log(f"{stage}/loss", self.eval_loss[stage], prog_bar=True)
        self.log(f"{stage}/accuracy", self.eval_accuracy[stage], prog_bar=True)
        tasks = batch.get("task")
        if tasks is not None:
            self.task_accuracy[stage].update(tasks, correct, padding)
        self._last_step_time = None
        return loss

    def _evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> torch.Tensor | None:
        """The evaluator's batches go to it (generation); every other batch is scored by teacher forcing."""
        if self.evaluator is not None and self.evaluator.owns(batch):
            self.evaluator.evaluation_step(self, batch, batch_idx)
            return None
        return self._evaluate(batch, stage)

    def _evaluation_epoch_end(self, stage: str) -> None:
        """Per-task accuracy (gathered over all ranks in one fixed task order; every rank calls this), evaluator."""
        accuracy = self.task_accuracy[stage]
        if not self.trainer.sanity_checking:
            for task, value in accuracy.compute().items():
                self.log(f"{stage}/accuracy_{task}", value, sync_dist=True)  # equal on all ranks already
        accuracy.reset()
        if self.evaluator is not None:
            self.evaluator.on_epoch_end(self, stage)

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        """Loss and exact-match answer accuracy, or generation + metric for the evaluator's batches."""
        return self._evaluation_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        """Log per-task accuracy and the evaluator's scores."""
        self._evaluation_epoch_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        """Same as validation, on the test split."""
        return self._evaluation_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        """Log per-task accuracy and the evaluator's scores (its table is printed)."""
        self._evaluation_epoch_end("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Greedy answers for left-padded prompts, one record per real row (with its ``sample_index`` when known)."""
        texts = answer(self.vlm, batch, self.max_new_tokens)
        padding = batch.get("padding") or [False] * len(texts)
        records = []
        for i, text in enumerate(texts):
            if padding[i]:
                continue
            record = {"prediction": text}
            for key in ("question", "answer", "task", "sample_index"):
                if key in batch:
                    record[key] = batch[key][i]
            records.append(record)
        return records

    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters grouped by part, with the part's learning rate when set."""
        groups = []
        for part in PARTS:
            module = getattr(self.vlm, part, None)
            params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
            if not params:
                continue
            group: dict[str, Any] = {"name": part, "params": params}
            if part in self.learning_rates:
                group["lr"] = self.learning_rates[part]
            groups.append(group)
        if not groups:
            raise ValueError("no trainable parameters: every part of the model is frozen")
        return groups

    def configure_optimizers(self):
        """The injected optimizer over :meth:`param_groups` (fp32 master weights), and the scheduler per step."""
        keep_trainable_in_fp32(self.vlm)  # after Lightning's precision conversion (bf16-true casts everything)
        optimizer = self.optimizer(self.param_groups())
        if self.device_mesh is None:  # FSDP2's DTensor parameters keep the optimizer as built
            prefer_fused(optimizer)
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler(optimizer), "interval": "step"}}
