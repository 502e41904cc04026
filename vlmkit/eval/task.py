"""``EvalTask`` and ``EvaluationDataModule``: benchmarks scored by generation, from YAML.

A task names a reader (any function returning ``EvalSample``s), the paper prompt, the
metric (a ``torchmetrics.Metric``, injected by ``class_path``) and the number of
in-context shots. The data module serves one dataloader per task; ``VLMModule``
generates, updates the task's metric and prints one results table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset
from torchmetrics import Metric

from vlmkit.data.collate import VLMCollator
from vlmkit.data.processor import VLMProcessor
from vlmkit.eval.prompts import PromptStyle, build_prompt, select_shots
from vlmkit.eval.sample import EvalSample


class EvalTask:
    """One scored evaluation.

    Args:
        name: Name in logs and in the results table (e.g. ``textvqa_0shot``).
        reader: Function returning the evaluated samples (e.g. ``vlmkit.eval.benchmarks.load_textvqa``).
        reader_kwargs: Keyword arguments of ``reader`` (file paths, split, ``limit``).
        metric: The metric; ``update(predictions, references)``, or with ``choices`` for multiple choice.
        prompt: Prompt style (appendix A.3.1): ``open``, ``multiple_choice``, ``caption`` or ``raw``.
        num_shots: In-context support examples before each query (the paper: 8 for base models).
        support_kwargs: ``reader`` arguments of the support set (default: ``reader_kwargs``; a query is
            never its own shot).
        shot_seed: Seed of the shot draw.
        chat: Chat template (instruction models) or plain text (base models).
        max_new_tokens: Generation budget per answer.
    """

    def __init__(
        self,
        name: str,
        reader: Callable[..., list[EvalSample]],
        metric: Metric,
        reader_kwargs: dict[str, Any] | None = None,
        prompt: PromptStyle = "open",
        num_shots: int = 0,
        support_kwargs: dict[str, Any] | None = None,
        shot_seed: int = 0,
        chat: bool = True,
        max_new_tokens: int = 16,
    ) -> None:
        if num_shots < 0:
            raise ValueError(f"task {name!r}: num_shots must be >= 0, got {num_shots}")
        self.name = name
        self.reader = reader
        self.metric = metric
        self.reader_kwargs = dict(reader_kwargs or {})
        self.prompt = prompt
        self.num_shots = num_shots
        self.support_kwargs = support_kwargs
        self.shot_seed = shot_seed
        self.chat = chat
        self.max_new_tokens = max_new_tokens

    def load(self) -> tuple[list[EvalSample], list[EvalSample]]:
        """The samples and the support set."""
        samples = self.reader(**self.reader_kwargs)
        if not samples:
            raise ValueError(f"task {self.name!r}: the reader returned no samples ({self.reader_kwargs})")
        support: list[EvalSample] = []
        if self.num_shots:
            support = samples if self.support_kwargs is None else self.reader(**self.support_kwargs)
        return samples, support

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]], choices: Sequence) -> None:
        """Feed one batch of answers to the metric."""
        if self.prompt == "multiple_choice":
            self.metric.update(predictions, [r[0] for r in references], choices=[list(c) for c in choices])
        else:
            self.metric.update(predictions, [list(r) for r in references])


class PromptDataset(Dataset):
    """A task's samples rendered as prompts (with their shots) for generation."""

    def __init__(self, task: EvalTask, task_index: int, processor: VLMProcessor, split_images: bool = False) -> None:
        self.task = task
        self.task_index = task_index
        self.processor = processor
        self.split_images = split_images
        self.samples, self.support = task.load()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        shots = select_shots(self.support, self.task.num_shots, self.task.shot_seed, sample)
        images, turns = build_prompt(sample, shots, self.task.prompt, chat=self.task.chat)
        item = self.processor(images, turns, add_generation_prompt=self.task.chat, split_images=self.split_images)
        item.update(
            references=sample.answers,
            choices=sample.choices,
            question=sample.question,
            sample_id=sample.id,
            task_index=self.task_index,
        )
        return item


class EvaluationDataModule(L.LightningDataModule):
    """Generation-based evaluation on a list of tasks, for ``vlmkit validate`` / ``vlmkit test``.

    Args:
        tasks: The evaluations, each with its own dataloader and metric.
        batch_size: Prompts per batch (the paper evaluates with 1; batched greedy decoding with left
            padding gives the same answers).
        num_workers: DataLoader workers.
        max_image_size: Processor cap on the longest side.
        min_image_size: Processor target for the shortest side.
        image_splitting: Split every image into 4 crops + itself (320 instead of 64 tokens in Idefics2).
    """

    def __init__(
        self,
        tasks: list[EvalTask],
        batch_size: int = 1,
        num_workers: int = 0,
        max_image_size: int = 980,
        min_image_size: int = 378,
        image_splitting: bool = False,
    ) -> None:
        super().__init__()
        names = [task.name for task in tasks]
        if not tasks or len(set(names)) != len(names):
            raise ValueError(f"tasks must be a non-empty list with unique names, got {names}")
        self.tasks = list(tasks)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_image_size = max_image_size
        self.min_image_size = min_image_size
        self.image_splitting = image_splitting
        self.processor: VLMProcessor | None = None
        self.patch_size: int | None = None

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
        return [
            DataLoader(
                PromptDataset(task, i, self.processor, self.image_splitting),
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                collate_fn=collate,
            )
            for i, task in enumerate(self.tasks)
        ]

    def val_dataloader(self) -> list[DataLoader]:
        """One dataloader per task."""
        return self._loaders()

    def test_dataloader(self) -> list[DataLoader]:
        """One dataloader per task."""
        return self._loaders()
