"""A training sampler that resumes mid-epoch: the data position is part of the checkpoint.

The shuffle of epoch ``e`` is a pure function of ``(seed, e)`` (as ``DistributedSampler``),
so a resumed run sees the same order, and skipping the samples a rank already consumed
continues exactly where the interrupted run stopped (per rank under DDP/FSDP).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DataLoader, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Shuffle by ``(seed, epoch)``, split across data-parallel ranks, optionally starting mid-epoch.

    Lightning keeps a ``DistributedSampler`` as it is and calls ``set_epoch`` every epoch.

    Args:
        dataset: The dataset (only its length is used).
        num_replicas: Data-parallel ranks.
        rank: This rank among them.
        shuffle: Shuffle every epoch (by ``seed + epoch``).
        seed: Shuffle seed, the same on every rank.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.resume_epoch: int | None = None
        self.resume_skip = 0

    def resume(self, epoch: int, samples_done: int) -> None:
        """Skip the first ``samples_done`` samples of this rank in ``epoch`` (the next epochs are whole)."""
        if samples_done < 0:
            raise ValueError(f"samples_done must be >= 0, got {samples_done}")
        self.resume_epoch, self.resume_skip = epoch, samples_done

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self.epoch == self.resume_epoch:
            indices = indices[self.resume_skip :]
        return iter(indices)


class SamplerPositionedLoader(DataLoader):
    """A ``DataLoader`` whose mid-epoch position is restored through its :class:`ResumableSampler`.

    The data module saves the position (epoch, batches consumed) in the checkpoint and rebuilds the sampler from it,
    so the loader itself carries no state. Having ``state_dict``/``load_state_dict`` tells Lightning so: without
    them it warns on every mid-epoch resume that the data loader is not resumable.
    """

    def state_dict(self) -> dict:
        """Nothing: the position lives in the data module's checkpoint entry."""
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to restore here (see the class docstring)."""
