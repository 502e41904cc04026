"""Every rank runs the same number of evaluation steps, and every sample counts exactly once.

Under FSDP every forward is a collective (weights are all-gathered), so a rank with one batch fewer
leaves the others waiting forever; Lightning's ``DistributedSampler`` instead repeats samples, which
counts them twice in metrics and predictions. Here the short ranks get **padding rows**: real samples
(so every forward runs the same modules) marked ``padding=True`` in the batch, which ``VLMModule``
leaves out of losses, metrics and predictions. Rows also carry their ``sample_index`` (position in
the dataset), so gathered predictions can be put back in order.

- Map-style datasets: :func:`evaluation_sampling` pads the dataset to a multiple of the ranks
  (:class:`RankPadded`) and splits it with a ``DistributedSampler`` that Lightning keeps as it is.
- Streams (``IterableDataset``, e.g. shard mixtures, whose length per rank is unknown in advance):
  :class:`LockstepLoader` asks all ranks at every step whether one still has a batch, and yields a
  padding copy of its last batch while another rank does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch.utils.data import Dataset, DistributedSampler, Sampler


class RankPadded(Dataset):
    """``dataset`` plus padding samples up to a multiple of ``num_replicas``, each item with its ``sample_index``.

    Item ``i >= len(dataset)`` is sample ``i - len(dataset)`` again, marked ``padding=True``.

    Args:
        dataset: A map-style dataset whose items are dicts.
        num_replicas: Data-parallel ranks.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1) -> None:
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        self.dataset = dataset
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        if self.num_samples == 0:
            raise ValueError("the evaluation dataset is empty")
        self.length = -(-self.num_samples // num_replicas) * num_replicas

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample_index = index % self.num_samples
        item = dict(self.dataset[sample_index])
        item.update(sample_index=sample_index, padding=index >= self.num_samples)
        return item


def evaluation_sampling(dataset: Dataset, trainer: Any = None) -> tuple[RankPadded, Sampler | None]:
    """The padded dataset and its sampler for validation, test or predict under ``trainer``'s ranks.

    Returns:
        ``(RankPadded(dataset, ranks), sampler)``: a ``DistributedSampler`` (in order, no repeats) that
        gives every rank ``ceil(len(dataset) / ranks)`` items, or ``None`` on one rank.
    """
    ranks = (getattr(trainer, "distributed_sampler_kwargs", None) if trainer is not None else None) or {}
    replicas, rank = ranks.get("num_replicas", 1), ranks.get("rank", 0)
    padded = RankPadded(dataset, replicas)
    if replicas == 1:
        return padded, None
    return padded, DistributedSampler(padded, num_replicas=replicas, rank=rank, shuffle=False, drop_last=False)


def batch_rows(batch: dict[str, Any]) -> int:
    """Rows of a collated batch."""
    return int(batch["input_ids"].shape[0])


class LockstepLoader:
    """Iterate ``loader`` in step with the other ranks: every rank yields as many batches as the longest one.

    Args:
        loader: This rank's batches (dicts with ``input_ids [b, s]``).
        any_rank: Whether a flag is true on any rank (a collective), e.g.
            ``functools.partial(trainer.strategy.reduce_boolean_decision, all=False)``.
        template: Builds a batch for a rank that has none at all (marked as padding).

    Real batches get ``padding = [False] * b``; once this rank is out of batches while another rank is not,
    it yields its last batch again with ``padding = [True] * b``.
    """

    def __init__(
        self,
        loader: Iterable[dict[str, Any]],
        any_rank: Callable[[bool], bool],
        template: Callable[[], dict[str, Any]],
    ) -> None:
        self.loader = loader
        self.any_rank = any_rank
        self.template = template

    def __iter__(self) -> Iterator[dict[str, Any]]:
        batches = iter(self.loader)
        last: dict[str, Any] | None = None
        while True:
            batch = next(batches, None)
            if not self.any_rank(batch is not None):  # one small collective per step
                return
            if batch is None:
                batch = copy.copy(last if last is not None else self.template())
                batch["padding"] = [True] * batch_rows(batch)
            else:
                batch["padding"] = [False] * batch_rows(batch)
                last = batch
            yield batch
