from types import SimpleNamespace

import pytest
import torch

from vlmkit.data.even_ranks import LockstepLoader, RankPadded, evaluation_sampling


class _Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"value": i}


@pytest.mark.parametrize(("n", "ranks"), [(7, 2), (5, 4), (1, 3), (6, 3), (4, 1)])
def test_every_rank_gets_as_many_items_and_every_sample_counts_once(n, ranks):
    shares = []
    for rank in range(ranks):
        trainer = SimpleNamespace(
            distributed_sampler_kwargs={"num_replicas": ranks, "rank": rank} if ranks > 1 else None
        )
        dataset, sampler = evaluation_sampling(_Items(n), trainer)
        indices = list(sampler) if sampler is not None else list(range(len(dataset)))
        shares.append([dataset[i] for i in indices])
    assert len({len(share) for share in shares}) == 1 and len(shares[0]) == -(-n // ranks)
    real = sorted(item["sample_index"] for share in shares for item in share if not item["padding"])
    assert real == list(range(n))  # each sample exactly once outside the padding rows
    assert all(item["value"] == item["sample_index"] for share in shares for item in share)


def test_empty_evaluation_dataset_is_refused():
    with pytest.raises(ValueError, match="empty"):
        RankPadded(_Items(0), 2)


def _batch(value, rows=2):
    return {"input_ids": torch.full((rows, 3), value)}


def test_lockstep_loader_pads_until_every_rank_is_done():
    other_rank_batches = 4
    steps = iter(range(100))

    def any_rank(mine: bool) -> bool:  # this rank or the other one (4 batches) still has a batch
        step = next(steps)
        return mine or step < other_rank_batches

    loader = LockstepLoader([_batch(1), _batch(2, rows=3)], any_rank, template=lambda: _batch(9, rows=1))
    batches = list(loader)
    assert [b["padding"] for b in batches] == [[False] * 2, [False] * 3, [True] * 3, [True] * 3]
    assert int(batches[-1]["input_ids"][0, 0]) == 2  # the last real batch again, marked as padding
    assert batches[1]["padding"] == [False] * 3  # a padding copy leaves the real batch unmarked
    steps = iter(range(100))
    empty = list(LockstepLoader([], any_rank, template=lambda: _batch(9, rows=1)))
    assert len(empty) == 4 and all(b["padding"] == [True] and int(b["input_ids"][0, 0]) == 9 for b in empty)
