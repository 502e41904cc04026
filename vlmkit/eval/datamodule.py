"""Data modules for evaluation: tasks alone (``validate``/``test``), or beside training data (``fit``).

``EvaluationDataModule`` serves one left-padded prompt dataloader per ``EvalTask`` and exposes the
:class:`~vlmkit.eval.evaluator.GenerationEvaluator` that scores them (``VLMModule(evaluator=...)``; ``vlmkit``
passes it on by itself). ``TrainWithEvaluation`` adds those dataloaders to a training data module's validation,
so ``fit`` scores the benchmarks every ``val_check_interval`` steps (on small subsets via each reader's ``limit``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from vlmkit.data.collate import VLMCollator
from vlmkit.data.even_ranks import evaluation_sampling
from vlmkit.data.loading import loader_options
from vlmkit.data.processor import VLMProcessor
from vlmkit.deprecation import renamed_argument
from vlmkit.eval.evaluator import GenerationEvaluator
from vlmkit.eval.task import EvalTask, PromptDataset


class EvaluationDataModule(L.LightningDataModule):
    """Generation-based evaluation on a list of tasks, for ``vlmkit validate`` / ``vlmkit test``.

    Args:
        tasks: The evaluations, each with its own dataloader and metric.
        batch_size: Prompts per batch (the paper evaluates with 1; batched greedy decoding with left
            padding gives the same answers).
        num_workers: DataLoader workers; ``None``: none on CPU, up to 4 per GPU process.
        max_image_size: Processor cap on the longest side.
        min_image_size: Processor target for the shortest side.
        eval_image_splitting: Split every image into 4 crops + itself (320 instead of 64 tokens in Idefics2).
        pin_memory: Page-locked batches for faster host-to-GPU copies; ``None``: when running on CUDA.
        image_splitting: Deprecated name of ``eval_image_splitting``.

    Attributes:
        evaluator: The :class:`~vlmkit.eval.evaluator.GenerationEvaluator` of ``tasks``, for ``VLMModule``.
    """

    def __init__(
        self,
        tasks: list[EvalTask],
        batch_size: int = 1,
        num_workers: int | None = None,
        max_image_size: int = 980,
        min_image_size: int = 378,
        eval_image_splitting: bool = False,
        pin_memory: bool | None = None,
        image_splitting: bool | None = None,
    ) -> None:
        super().__init__()
        self.evaluator = GenerationEvaluator(tasks)
        self.tasks = self.evaluator.tasks
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_image_size = max_image_size
        self.min_image_size = min_image_size
        self.eval_image_splitting = renamed_argument(
            "EvaluationDataModule",
            "image_splitting",
            image_splitting,
            "eval_image_splitting",
            eval_image_splitting,
            False,
        )
        self.pin_memory = pin_memory
        self.processor: VLMProcessor | None = None
        self.patch_size: int | None = None

    @property
    def evaluation_tasks(self) -> list[EvalTask]:
        """The tasks, in dataloader order."""
        return self.tasks

    def connect(self, model) -> None:
        """Build the processor from ``model`` (done by ``setup`` under a Trainer)."""
        self.processor = VLMProcessor.from_model(model, self.max_image_size, self.min_image_size)
        self.patch_size = model.vision_encoder.patch_size

    def setup(self, stage: str | None = None) -> None:
        """Connect to the trainer's model when not connected yet."""
        if self.processor is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or not hasattr(module, "vlm"):
                raise RuntimeError("EvaluationDataModule needs a model: call connect(vlm) or run under a Trainer")
            self.connect(module.vlm)

    def _loaders(self) -> list[DataLoader]:
        if self.processor is None:
            raise RuntimeError("call setup() or connect(vlm) before asking for dataloaders")
        collate = VLMCollator(self.processor.tokenizer.pad_token_id, self.patch_size, padding_side="left")
        loaders = []
        for i, task in enumerate(self.tasks):
            # every sample once, the same number of batches on every rank (padding rows marked)
            dataset, sampler = evaluation_sampling(
                PromptDataset(task, i, self.processor, self.eval_image_splitting), self.trainer
            )
            loaders.append(
                DataLoader(
                    dataset,
                    self.batch_size,
                    sampler=sampler,
                    collate_fn=collate,
                    **loader_options(self.trainer, self.num_workers, self.pin_memory),
                )
            )
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        """One dataloader per task."""
        return self._loaders()

    def test_dataloader(self) -> list[DataLoader]:
        """One dataloader per task."""
        return self._loaders()


class TrainWithEvaluation(L.LightningDataModule):
    """Train on one data module and validate on its validation data plus evaluation tasks.

    The training data module's own hooks (batch transfer, state for resuming, teardown) keep running.

    Args:
        data: The training data module (its validation loader stays the first one).
        evaluation: The tasks scored by generation at every validation.

    Attributes:
        evaluator: ``evaluation.evaluator``, for ``VLMModule``.
    """

    def __init__(self, data: L.LightningDataModule, evaluation: EvaluationDataModule) -> None:
        super().__init__()
        self.data = data
        self.evaluation = evaluation
        self.evaluator = evaluation.evaluator

    @property
    def evaluation_tasks(self) -> list[EvalTask]:
        """The evaluation tasks."""
        return self.evaluation.tasks

    def setup(self, stage: str | None = None) -> None:
        """Set up both modules against the same trainer."""
        for module in (self.data, self.evaluation):
            module.trainer = self.trainer
            module.setup(stage)

    def train_dataloader(self):
        """The training data."""
        return self.data.train_dataloader()

    def val_dataloader(self) -> list[DataLoader]:
        """The training data's validation loader, then one loader per task."""
        return [self.data.val_dataloader(), *self.evaluation.val_dataloader()]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The training data module's hook (its counters, logging)."""
        return self.data.on_before_batch_transfer(batch, dataloader_idx)

    def state_dict(self) -> dict[str, Any]:
        """The training data's position, for checkpoints."""
        return self.data.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training data."""
        self.data.load_state_dict(state_dict)

    def teardown(self, stage: str) -> None:
        """Tear down both modules."""
        for module in (self.data, self.evaluation):
            module.teardown(stage)
