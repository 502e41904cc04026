"""A weighted mixture of sources as one ``IterableDataset``, deterministic by seed (paper section 4.1).

Each reader (``node_rank * num_workers + worker``) draws the source of its next sample from its own
``random.Random(seed, reader)`` by the sources' weights, takes that source's next sample, renders it
and optionally packs. Training streams are endless (each source re-reads its data in reshuffled
passes; the run length is ``max_steps``); evaluation streams read every source once. Skipped samples
are counted per source and reason in shared :class:`~vlmkit.data.stats.DataStats`; their warnings are
rate-limited (the first few of each source and reason, then the 2nd, 4th, 8th... with the count). A training
source whose reader has visited every shard it can be given without one usable sample stops the run with an
:class:`EmptySourceError` naming the source and its shards (it would otherwise be read forever).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from vlmkit.checks import check_fraction, check_image_sizes
from vlmkit.data.formats import FORMATS, BadSample, CaptionField, PassEnd, Record
from vlmkit.data.render import SampleRenderer
from vlmkit.data.sequence_packing import pack
from vlmkit.data.stats import DataStats, SkipLog
from vlmkit.errors import UserInputError

log = logging.getLogger(__name__)


class EmptySourceError(UserInputError, RuntimeError):
    """A training source that gave no usable sample in a full pass over its shards (it would be read forever)."""


def _preview(items: Sequence[str], limit: int = 5) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


class _Liveness:
    """Per source: the shards of the passes that gave no usable sample since the last one that did."""

    def __init__(self) -> None:
        self.visited: set[str] = set()
        self.reasons: Counter[str] = Counter()
        self.used_this_pass = False

    def used(self) -> None:
        self.used_this_pass = True
        self.reasons.clear()

    def dead(self, end: PassEnd) -> bool:
        """Whether, with the pass that ``end`` closes, every shard this reader can get was read for nothing."""
        if self.used_this_pass:
            self.visited.clear()
            self.used_this_pass = False
            return False
        self.visited.update(end.shards)
        return self.visited >= set(end.possible)


class MixtureSource(Protocol):
    """What a mixture needs from a source (``ShardSource``, ``SyntheticSource``): its stream and how to render it."""

    name: str
    """Unique among the mixture's sources; names the source in logs and counters."""
    weight: float
    """Sampling proportion (normalised over the sources)."""
    max_length: int
    """Token budget per sample."""
    max_image_size: int
    """Longest processed image side."""
    min_image_size: int
    """Target shortest processed image side."""
    caption_field: CaptionField
    """For pairs, which caption trains."""
    shuffle_turns: bool
    """Shuffle the turns of multi-turn conversations in training."""
    image_splitting: float
    """Chance that a training sample's images are split into 4 crops + the image."""
    eval_image_splitting: bool
    """Split every image when the source is read for validation."""
    max_image_pixels: int | None
    """Skip an image that decodes to more pixels (``None``: no limit)."""

    def records(self, rank: int, world: int, seed: int, endless: bool) -> Iterator[Record | BadSample | PassEnd]:
        """Reader ``rank`` of ``world``'s samples (bad ones as markers), endless or one pass.

        Endless streams over files may mark the end of each pass with a :class:`PassEnd`.
        """
        ...


def check_source_settings(
    format: str, weight: float, min_image_size: int | None, max_image_size: int, image_splitting: float
) -> None:
    """The checks every mixture source makes of its common settings (``ValueError`` naming the argument)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if weight <= 0:
        raise ValueError(f"weight must be > 0, got {weight}")
    check_image_sizes(min_image_size, max_image_size)
    check_fraction("image_splitting", image_splitting)


def reader_info() -> tuple[int, int, int]:
    """``(reader, readers, worker)``: this process's global reader index, the number of readers, its worker id."""
    node, nodes = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return node * workers + worker, nodes * workers, worker


class MixtureStream(IterableDataset):
    """Samples drawn from ``sources`` by weight, rendered by the matching renderer, optionally packed.

    Args:
        sources: The sources.
        renderers: One renderer per source (its length budget and image size).
        stats: Shared counters (one row per worker).
        seed: Mixture seed: source draws, shard order, shuffle buffers, augmentation.
        endless: Cycle through sources forever (training) or read each once (evaluation).
        pack_length: Pack samples into rows of this many tokens; ``None``: one sample per row.
        augment: Use training randomness (turn shuffling, image upscaling).
    """

    def __init__(
        self,
        sources: Sequence[MixtureSource],
        renderers: Sequence[SampleRenderer],
        stats: DataStats,
        seed: int = 0,
        endless: bool = True,
        pack_length: int | None = None,
        augment: bool = True,
    ) -> None:
        super().__init__()
        if len(sources) != len(renderers) or not sources:
            raise ValueError("give one renderer per source, and at least one source")
        self.sources = list(sources)
        self.renderers = list(renderers)
        self.stats = stats
        self.seed = seed
        self.endless = endless
        self.pack_length = pack_length
        self.augment = augment

    def _samples(self) -> Iterator[dict[str, Any]]:
        reader, readers, worker = reader_info()
        streams = [iter(s.records(reader, readers, self.seed, self.endless)) for s in self.sources]
        draw = random.Random(f"vlmkit.mixture:{self.seed}:{reader}")
        augment = random.Random(f"vlmkit.augment:{self.seed}:{reader}") if self.augment else None
        active = list(range(len(self.sources)))
        liveness = [_Liveness() for _ in self.sources]
        skip_log = SkipLog(log)
        while active:
            i = draw.choices(active, weights=[self.sources[j].weight for j in active])[0] if self.endless else active[0]
            source = self.sources[i]
            try:
                record = next(streams[i])
            except StopIteration:
                active.remove(i)
                continue
            if isinstance(record, PassEnd):
                if self.endless and liveness[i].dead(record):
                    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(liveness[i].reasons.items())) or "none"
                    raise EmptySourceError(
                        f"source {source.name!r} gave no usable sample in a full pass over its shards "
                        f"[{_preview(sorted(liveness[i].visited))}] (reader {reader} of {readers}); skipped: {reasons}"
                    )
                continue
            try:
                if isinstance(record, BadSample):
                    raise record
                sample = self.renderers[i](record, augment)
            except BadSample as bad:
                self.stats.add(worker, source.name, bad.reason)
                liveness[i].reasons[bad.reason] += 1
                skip_log(source.name, bad)
                continue
            liveness[i].used()
            self.stats.add(worker, source.name, "ok")
            if sample["dropped_images"]:
                self.stats.add(worker, source.name, "dropped_images", sample["dropped_images"])
            yield sample

    def __iter__(self) -> Iterator[dict[str, Any]]:
        samples = self._samples()
        return pack(samples, self.pack_length) if self.pack_length else samples
