"""The built-in data: synthetic shape and reading questions, served as a ``LightningDataModule``.

Everything is generated from a seed (train, validation, test and predict use
different seeds, hence different images), so the quickstart needs no download.
The processor comes from the model being trained, so placeholders always match.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from vlmkit.checks import check_fraction
from vlmkit.data.collate import VLMCollator
from vlmkit.data.even_ranks import evaluation_sampling
from vlmkit.data.image_processing import ResizeMode
from vlmkit.data.loading import loader_options
from vlmkit.data.processor import VLMProcessor
from vlmkit.data.render import SampleRenderer
from vlmkit.data.resumable_sampler import ResumableSampler, SamplerPositionedLoader
from vlmkit.data.synthetic import SyntheticVQADataset, vqa_record

if TYPE_CHECKING:
    from vlmkit.model import VisionLanguageModel


class ProcessedVQA(Dataset):
    """Synthetic questions as one-turn conversations, rendered by the one rendering path (a ``SampleRenderer``).

    Each sample becomes the same :class:`~vlmkit.data.formats.Record` a shard of the sample would hold
    (:func:`~vlmkit.data.synthetic.vqa_record`), so it gets the same ids, labels, pixels and random draws as through
    a shard mixture.

    Args:
        samples: The raw samples.
        renderer: Renders the records; its ``image_splitting`` applies in training, ``eval_image_splitting`` else.
        for_generation: Stop at ``Assistant:`` (prompt only) instead of including the answer.
        augment_seed: Seed of the per-sample training randomness (splitting draw, upscaling); ``None``: evaluation,
            no randomness. Sample ``i`` always gets the same draws.
    """

    def __init__(
        self,
        samples: SyntheticVQADataset,
        renderer: SampleRenderer,
        for_generation: bool = False,
        augment_seed: int | None = None,
    ) -> None:
        self.samples = samples
        self.renderer = renderer
        self.for_generation = for_generation
        self.augment_seed = augment_seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        rng = None if self.augment_seed is None else random.Random(f"vlmkit.augment:{self.augment_seed}:{index}")
        item = self.renderer(vqa_record(sample, index), rng, add_generation_prompt=self.for_generation)
        del item["dropped_images"]  # no budget: nothing is dropped
        item.update(question=sample.question, answer=sample.answer, task=sample.task)
        return item


class SyntheticVQADataModule(L.LightningDataModule):
    """Synthetic visual questions (colour, shape, count, position, reading), deterministic by seed.

    Args:
        tasks: Which question types to mix in training (see ``vlmkit.data.synthetic.TASKS``;
            ``caption`` adds "Describe the image." with the full caption as answer).
        val_tasks: Question types of the validation, test and predict splits (default: ``tasks``).
        num_train: Training samples per epoch.
        num_val: Validation samples.
        num_test: Test samples.
        num_predict: Samples answered by ``vlmkit predict``.
        seed: Base seed; splits use ``seed``, ``seed + 1``, ``seed + 2``, ``seed + 3``.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes; ``None``: none on CPU, up to 4 per GPU process
            (:func:`~vlmkit.data.loading.loader_options`).
        pin_memory: Page-locked batches for faster host-to-GPU copies; ``None``: when training on CUDA.
        min_size: Smallest side of generated images, in pixels.
        max_size: Largest side of generated images, in pixels.
        max_shapes: Most shapes per image (1 to 3); fewer makes the questions easier.
        max_image_size: Processor cap on the longest side.
        min_image_size: Processor target for the shortest side.
        image_splitting: Fraction of training samples whose image is split into 4 crops + the
            whole image (Idefics2 instruction tuning: 0.5).
        eval_image_splitting: Split every image in validation, test and predict.
        upscale_probability: Chance that a training image is randomly scaled up first.
        resize_mode: ``"preserve_aspect"`` (Idefics2) or ``"square"``: every image resized to
            ``max_image_size`` squared, whatever its aspect ratio (paper Table 5's baseline).
    """

    def __init__(
        self,
        tasks: Sequence[str] = ("color", "shape", "count", "position"),
        val_tasks: Sequence[str] | None = None,
        num_train: int = 4000,
        num_val: int = 256,
        num_test: int = 256,
        num_predict: int = 16,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int | None = None,
        min_size: int = 32,
        max_size: int = 96,
        max_shapes: int = 3,
        max_image_size: int = 96,
        min_image_size: int = 32,
        image_splitting: float = 0.0,
        eval_image_splitting: bool = False,
        upscale_probability: float = 0.0,
        pin_memory: bool | None = None,
        resize_mode: ResizeMode = "preserve_aspect",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.tasks = tuple(tasks)
        self.val_tasks = tuple(val_tasks) if val_tasks is not None else self.tasks
        check_fraction("image_splitting", image_splitting)
        check_fraction("upscale_probability", upscale_probability)
        for split in ("train", "val"):  # validate tasks, sizes and counts now, not at the first batch
            self._raw(split)
        self.processor: VLMProcessor | None = None
        self.renderer: SampleRenderer | None = None
        self.patch_size: int | None = None
        self._resume: dict[str, int] = {}
        self._baselines: dict[str, float] = {}
        self._baseline_logged_at: int | None = None

    def connect(self, model: VisionLanguageModel) -> None:
        """Build the processor from ``model`` (done automatically by ``setup`` under a Trainer)."""
        hp = self.hparams
        self.processor = VLMProcessor.from_model(
            model,
            max_image_size=hp.max_image_size,
            min_image_size=hp.min_image_size,
            upscale_probability=hp.upscale_probability,
            resize_mode=hp.resize_mode,
        )
        self.renderer = SampleRenderer.for_processor(
            self.processor, image_splitting=hp.image_splitting, eval_image_splitting=hp.eval_image_splitting
        )
        self.patch_size = model.vision_encoder.patch_size

    def _raw(self, split: str) -> SyntheticVQADataset:
        offset = {"train": 0, "val": 1, "test": 2, "predict": 3}[split]
        size = getattr(self.hparams, f"num_{split}")
        hp = self.hparams
        tasks = self.tasks if split == "train" else self.val_tasks
        return SyntheticVQADataset(size, hp.seed + offset, tasks, hp.min_size, hp.max_size, hp.max_shapes)

    def setup(self, stage: str | None = None) -> None:
        """Connect to the trainer's model when not connected yet."""
        if self.processor is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or not hasattr(module, "vlm"):
                raise RuntimeError("SyntheticVQADataModule needs a model: call connect(vlm) or run under a Trainer")
            self.connect(module.vlm)

    def majority_baseline(self, split: str = "val") -> float:
        """Accuracy of always answering each task's most common answer on ``split`` (computed once per split)."""
        if split not in self._baselines:
            data = self._raw(split)
            by_task: dict[str, Counter] = {}
            for i in range(len(data)):
                sample = data[i]
                by_task.setdefault(sample.task, Counter())[sample.answer] += 1
            self._baselines[split] = sum(c.most_common(1)[0][1] for c in by_task.values()) / max(1, len(data))
        return self._baselines[split]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """At each validation (not the sanity check), log ``val/majority_baseline`` next to the model's accuracy."""
        trainer = self.trainer
        if trainer is None or not trainer.validating or trainer.sanity_checking:
            return batch
        if self._baseline_logged_at != trainer.global_step:
            self._baseline_logged_at = trainer.global_step
            for logger in trainer.loggers:
                logger.log_metrics({"val/majority_baseline": self.majority_baseline("val")}, trainer.global_step)
        return batch

    def dataset(self, split: str) -> ProcessedVQA:
        """The processed samples of ``split`` (``train``, ``val``, ``test`` or ``predict``)."""
        if self.processor is None:
            raise RuntimeError("call setup() or connect(vlm) before asking for data")
        if split == "train":
            return ProcessedVQA(self._raw(split), self.renderer, augment_seed=self.hparams.seed)
        return ProcessedVQA(self._raw(split), self.renderer, for_generation=split == "predict")

    def state_dict(self) -> dict[str, int]:
        """The training data position (epoch, batches this rank consumed in it), saved in checkpoints."""
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches": progress.processed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Resume the training data where the checkpoint left it (see ``ResumableSampler``)."""
        self._resume = dict(state_dict)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        dataset = self.dataset(split)
        collate = VLMCollator(
            self.processor.tokenizer.pad_token_id, self.patch_size, "left" if dataset.for_generation else "right"
        )
        sampler = None
        if shuffle:  # deterministic by (seed, epoch), split across ranks, resumable mid-epoch
            ranks = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
            replicas, rank = ranks.get("num_replicas", 1), ranks.get("rank", 0)
            sampler = ResumableSampler(dataset, replicas, rank, seed=self.hparams.seed)
            if self._resume:
                sampler.resume(self._resume["epoch"], self._resume["batches"] * self.hparams.batch_size)
        else:  # every sample once, the same number of batches on every rank (padding rows marked)
            dataset, sampler = evaluation_sampling(dataset, self.trainer)
        return (SamplerPositionedLoader if shuffle else DataLoader)(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            collate_fn=collate,
            **loader_options(self.trainer, self.hparams.num_workers, self.hparams.pin_memory),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (order fixed by ``seed`` and the epoch; resumes mid-epoch)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches with answers (loss and teacher-forced exact match)."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches with answers."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Left-padded prompts ending at ``Assistant:``, for generation."""
        return self._loader("predict")
