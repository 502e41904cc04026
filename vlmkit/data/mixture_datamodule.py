"""``MixtureDataModule``: a per-stage mixture of shard (or synthetic) sources for ``fit``/``validate``.

The processor pieces come from the model being trained (tokenizer, placeholders per image, the
encoder's patch size and normalisation), each source adds its own length budget and image size.
Training batches come from a :class:`~torchdata.stateful_dataloader.StatefulDataLoader`, whose
state Lightning stores in checkpoints: a resumed run continues the stream exactly after the last
batch trained on (the loader fast-forwards each worker's deterministic stream past the samples
already yielded; :class:`ConsumedStateLoader` discounts the batch Lightning prefetched).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torchdata.stateful_dataloader import StatefulDataLoader

from vlmkit.checks import check_fraction
from vlmkit.data.even_ranks import LockstepLoader
from vlmkit.data.loading import loader_options
from vlmkit.data.mixture import MixtureSource, MixtureStream
from vlmkit.data.processor import VLMProcessor
from vlmkit.data.render import SampleRenderer, Truncation
from vlmkit.data.sequence_packing import PackedCollator
from vlmkit.data.shard_source import ShardSource
from vlmkit.data.stats import DataStats
from vlmkit.data.synthetic_sources import SyntheticSource, synthetic_record
from vlmkit.errors import UserInputError

if TYPE_CHECKING:
    from vlmkit.model import VisionLanguageModel

log = logging.getLogger(__name__)


class DataResumeError(UserInputError, ValueError):
    """A checkpoint's data-loader state that this run's loader cannot continue (e.g. another ``num_workers``)."""


def saved_num_workers(state: dict[str, Any]) -> int | None:
    """The ``num_workers`` a ``StatefulDataLoader`` state was saved with (``None`` for an empty state)."""
    main = state.get("_snapshot", {}).get("_main_snapshot", {}) if isinstance(state.get("_snapshot"), dict) else {}
    if "_num_workers" in main:  # a multi-process loader's state
        return int(main["_num_workers"])
    return 0 if "_num_yielded" in state else None


class ConsumedStateLoader(StatefulDataLoader):
    """A ``StatefulDataLoader`` whose ``state_dict`` describes the batches training *consumed*.

    Lightning prefetches one batch ahead, so the loader's own state at checkpoint time already
    counts a batch that was never trained on; a resumed run would skip it. The loader keeps the
    state after each of its last few batches, and the data module reports which were consumed.
    """

    consumed: int | None = None
    """Batches training took from the current iterator (counted by ``MixtureDataModule``); ``None``: untracked."""

    def __iter__(self):
        self.consumed = None
        self._states = {}
        iterator = super().__iter__()
        self._states[0] = super().state_dict()
        for yielded, batch in enumerate(iterator, start=1):
            self._states[yielded] = super().state_dict()
            self._states.pop(yielded - 8, None)
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The loader state after the consumed batches (the live state when that is unknown)."""
        states = getattr(self, "_states", {})
        return states[self.consumed] if self.consumed in states else super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from ``state_dict``, which must come from a loader with the same ``num_workers``.

        Raises:
            DataResumeError: Naming both worker counts and what to pass.
        """
        saved = saved_num_workers(state_dict)
        if saved is not None and saved != self.num_workers:
            raise DataResumeError(
                f"cannot resume the training data: the checkpoint's data loader ran num_workers={saved}, this run "
                f"has num_workers={self.num_workers}. Every worker reads its own seeded share of the shards, so the "
                f"stream continues exactly only with the same number: pass --data.init_args.num_workers={saved}"
            )
        super().load_state_dict(state_dict)


class MixtureDataModule(L.LightningDataModule):
    """Mix sources by weight, render, pack, batch; count and log skipped samples.

    Args:
        sources: Training sources with their ``weight``, ``max_length``, image sizes and ``image_splitting``
            (default: synthetic pairs, PDFs, interleaved documents and conversations, equal weights).
        val_sources: Validation sources, each read once per validation (default: none).
        batch_size: Rows per batch (packed rows when ``pack_length`` is set).
        num_workers: Dataloader workers (each reads disjoint shards). Explicit, as the shards' split across
            readers and a resumed data stream depend on it; GPU recipes set 4-8 per process.
        seed: Mixture seed (source draws, shard order, shuffle buffers, augmentation).
        pack_length: Pack training samples into rows of this many tokens (``>=`` every source's
            ``max_length``); ``None`` keeps one sample per row. Needs a model that supports packed rows
            (``VisionLanguageModel.supports_packing``: fully autoregressive fusion, an LM that restarts positions).
        truncation: Too-long samples: ``drop_images`` (cut before the first image that does not fit)
            or ``drop_sample``.
        upscale_probability: Chance that a training image is randomly scaled up first.
        crop_markers: Mark the crops of split images (the sources' ``image_splitting``) with
            ``<row_i_col_j>``/``<global-img>`` (Idefics3's layout); ``False``: Idefics2's layout (five plain image
            blocks in a row, what ``vlmkit export-idefics2 --split_images`` and Idefics2's processor give).
            ``None``: markers for vlmkit's own text layout and for a tiling model (``tile_size``: Idefics3, SmolVLM),
            none for a model imported with its checkpoint's chat template without tiling (Idefics2), whose text,
            including the split layout, is then transformers' processor's.
        max_bad_fraction: Stop with an error once more than this fraction of read samples was skipped.
        min_samples_for_bad_fraction: Samples to read before ``max_bad_fraction`` is enforced.
        log_every_n_batches: Log the counters (``data/<source>/<reason>``, ``data/<source>/share``) this often.
        pin_memory: Page-locked batches for faster host-to-GPU copies; ``None``: when training on CUDA.
    """

    def __init__(
        self,
        sources: list[ShardSource | SyntheticSource] | None = None,
        val_sources: list[ShardSource | SyntheticSource] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        pack_length: int | None = None,
        truncation: Truncation = "drop_images",
        upscale_probability: float = 0.0,
        crop_markers: bool | None = None,
        max_bad_fraction: float = 0.05,
        min_samples_for_bad_fraction: int = 100,
        log_every_n_batches: int = 50,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if sources is None:
            sources = [SyntheticSource(f) for f in ("pair", "pdf", "interleaved", "conversation")]
        if not sources:
            raise ValueError("sources must hold at least one source")
        for group in (sources, val_sources or []):
            names = [s.name for s in group]
            if len(set(names)) != len(names):
                raise ValueError(f"source names must be unique, got {names}; set `name` on ShardSource")
        if pack_length is not None and any(s.max_length > pack_length for s in sources):
            raise ValueError(f"pack_length={pack_length} is shorter than a source's max_length")
        check_fraction("max_bad_fraction", max_bad_fraction)
        self.sources = list(sources)
        self.val_sources = list(val_sources or [])
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pack_length = pack_length
        self.truncation = truncation
        self.upscale_probability = upscale_probability
        self.crop_markers = crop_markers
        self.max_bad_fraction = max_bad_fraction
        self.min_samples_for_bad_fraction = min_samples_for_bad_fraction
        self.log_every_n_batches = log_every_n_batches
        self.pin_memory = pin_memory
        self.model: VisionLanguageModel | None = None
        self.train_stats: DataStats | None = None
        self.val_stats: DataStats | None = None
        self._batches = 0

    def connect(self, model: VisionLanguageModel) -> None:
        """Take tokenizer, placeholder counts and image normalisation from ``model``.

        Raises:
            ValueError: With ``pack_length``, for a model whose parts do not support packed rows (named).
        """
        if self.pack_length is not None:
            try:
                model.check_packing()
            except ValueError as err:
                raise ValueError(f"pack_length={self.pack_length}: {err}") from err
        self.model = model

    def setup(self, stage: str | None = None) -> None:
        """Connect to the trainer's model when not connected yet."""
        if self.model is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or not hasattr(module, "vlm"):
                raise RuntimeError("MixtureDataModule needs a model: call connect(vlm) or run under a Trainer")
            self.connect(module.vlm)

    def renderer(self, source: MixtureSource, train: bool) -> SampleRenderer:
        """The renderer of ``source`` for the connected model (its length budget, image sizes and splitting)."""
        if self.model is None:
            raise RuntimeError("call setup() or connect(vlm) before asking for data")
        processor = VLMProcessor.from_model(
            self.model,
            source.max_image_size,
            source.min_image_size,
            crop_markers=self.crop_markers,
            upscale_probability=self.upscale_probability if train else 0.0,
        )
        return SampleRenderer.for_processor(
            processor,
            source.max_length,
            caption_field=source.caption_field,
            shuffle_turns=source.shuffle_turns,
            truncation=self.truncation,
            image_splitting=source.image_splitting,
            eval_image_splitting=source.eval_image_splitting,
            max_image_pixels=source.max_image_pixels,
        )

    def _loader(self, train: bool) -> StatefulDataLoader:
        sources = self.sources if train else self.val_sources
        stats = DataStats([s.name for s in sources], self.num_workers)
        dataset = MixtureStream(
            sources,
            [self.renderer(s, train) for s in sources],
            stats,
            self.seed,
            endless=train,
            pack_length=self.pack_length if train else None,
            augment=train,
        )
        if train:
            self.train_stats = stats
        else:
            self.val_stats = stats
        return (ConsumedStateLoader if train else StatefulDataLoader)(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=loader_options(self.trainer, self.num_workers, self.pin_memory)["pin_memory"],
            collate_fn=PackedCollator(self.model.tokenizer.pad_token_id, self.model.vision_encoder.patch_size),
        )

    def train_dataloader(self) -> StatefulDataLoader:
        """The endless training stream (its length is the trainer's ``max_steps``)."""
        return self._loader(train=True)

    def val_dataloader(self) -> StatefulDataLoader | LockstepLoader | list:
        """Every validation source read once, unpacked (``[]`` when there are none).

        Readers get different numbers of samples, so on several ranks the loader runs in lockstep: a rank out
        of batches repeats its last one marked as padding until every rank is done (``LockstepLoader``).
        """
        if not self.val_sources:
            return []
        loader = self._loader(train=False)
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return loader
        any_rank = functools.partial(trainer.strategy.reduce_boolean_decision, all=False)
        return LockstepLoader(loader, any_rank, self._padding_batch)

    def _padding_batch(self) -> dict[str, Any]:
        """A one-row batch for a rank whose validation readers got no sample at all (a synthetic pair)."""
        source = self.val_sources[0]
        record = synthetic_record("pair", self.seed, 0, source.min_image_size, source.max_image_size)
        sample = self.renderer(source, train=False)(record)
        return PackedCollator(self.model.tokenizer.pad_token_id, self.model.vision_encoder.patch_size)([sample])

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Enforce ``max_bad_fraction`` and log the counters every ``log_every_n_batches`` training batches.

        Raises:
            RuntimeError: When more than ``max_bad_fraction`` of the samples read so far were skipped.
        """
        trainer = self.trainer
        if trainer is None or not trainer.training or self.train_stats is None:
            return batch
        self._batches += 1
        loader = trainer.train_dataloader
        if isinstance(loader, ConsumedStateLoader):
            loader.consumed = (loader.consumed or 0) + 1
        fraction, read = self.train_stats.bad_fraction()
        if read >= self.min_samples_for_bad_fraction and fraction > self.max_bad_fraction:
            raise RuntimeError(
                f"{fraction:.1%} of the {read} training samples read so far were bad "
                f"(max_bad_fraction={self.max_bad_fraction}):\n{self.train_stats.report()}"
            )
        if self._batches % self.log_every_n_batches == 0:
            self.log_counts()
        return batch

    def log_counts(self) -> dict[str, float]:
        """Send the training counters and realised source shares to the trainer's loggers."""
        if self.train_stats is None:
            return {}
        metrics: dict[str, float] = {f"data/{k}": float(v) for k, v in self.train_stats.totals().items()}
        metrics.update({f"data/{s}/share": p for s, p in self.train_stats.proportions().items()})
        metrics["data/bad_fraction"] = self.train_stats.bad_fraction()[0]
        if self.trainer is not None:
            for logger in self.trainer.loggers:
                logger.log_metrics(metrics, step=self.trainer.global_step)
        return metrics

    def teardown(self, stage: str) -> None:
        """Print the per-source report (used, realised share, dropped images, skipped by reason)."""
        for name, stats in (("training", self.train_stats), ("validation", self.val_stats)):
            if stats is not None and stats.totals():
                if name == "training":
                    self.log_counts()
                rank_zero_info(f"\n{name} data:\n{stats.report()}")  # not the stage enum (TrainerFn.FITTING)
