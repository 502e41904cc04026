"""``EvalTask``: one benchmark scored by generation, configured from YAML.

A task names a reader (any function returning ``EvalSample``s), the paper prompt, the
metric (a ``torchmetrics.Metric``, injected by ``class_path``) and the number of
in-context shots; ``PromptDataset`` renders its samples (with their shots) as prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset
from torchmetrics import Metric

from vlmkit.data.processor import VLMProcessor
from vlmkit.eval.prompts import PromptStyle, build_prompt, select_shots
from vlmkit.eval.sample import EvalSample


@dataclass
class EvalTask:
    """One scored evaluation.

    Attributes:
        name: Name in logs and in the results table (e.g. ``textvqa_0shot``).
        reader: Function returning the evaluated samples (e.g. ``vlmkit.eval.benchmarks.load_textvqa``).
        metric: The metric; ``update(predictions, references)``, or with ``choices`` for multiple choice.
        reader_kwargs: Keyword arguments of ``reader`` (file paths, split, ``limit``).
        prompt: Prompt style (appendix A.3.1): ``open``, ``multiple_choice``, ``caption`` or ``raw``.
        num_shots: In-context support examples before each query (the paper: 8 for base models).
        support_kwargs: ``reader`` arguments of the support set (default: ``reader_kwargs``; a query is
            never its own shot).
        shot_seed: Seed of the shot draw.
        chat: Chat template (instruction models) or plain text (base models).
        max_new_tokens: Generation budget per answer.
    """

    name: str
    reader: Callable[..., list[EvalSample]]
    metric: Metric
    reader_kwargs: dict[str, Any] = field(default_factory=dict)
    prompt: PromptStyle = "open"
    num_shots: int = 0
    support_kwargs: dict[str, Any] | None = None
    shot_seed: int = 0
    chat: bool = True
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        if self.num_shots < 0:
            raise ValueError(f"task {self.name!r}: num_shots must be >= 0, got {self.num_shots}")

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
        try:
            item = self.processor(images, turns, add_generation_prompt=self.task.chat, split_images=self.split_images)
        except ValueError as err:  # an image that does not decode: the score would be wrong without this sample
            raise ValueError(f"task {self.task.name!r} sample {sample.id!r}: {err}") from err
        item.update(
            references=sample.answers,
            choices=sample.choices,
            question=sample.question,
            sample_id=sample.id,
            task_index=self.task_index,
        )
        return item
