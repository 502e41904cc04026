import pytest

from vlmkit.data.resumable_sampler import ResumableSampler


def test_order_is_fixed_by_seed_and_epoch_and_split_across_ranks():
    data = list(range(10))
    a, b = ResumableSampler(data, seed=3), ResumableSampler(data, seed=3)
    assert list(a) == list(b) and sorted(a) == data
    b.set_epoch(1)
    assert list(b) != list(a) and sorted(b) == data
    ranks = [list(ResumableSampler(data, num_replicas=2, rank=r, seed=3)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == data and len(ranks[0]) == len(ranks[1]) == 5


def test_resume_skips_what_was_consumed_in_that_epoch_only():
    data = list(range(12))
    full = ResumableSampler(data, num_replicas=2, rank=1, seed=0)
    full.set_epoch(2)
    resumed = ResumableSampler(data, num_replicas=2, rank=1, seed=0)
    resumed.resume(epoch=2, samples_done=4)
    resumed.set_epoch(2)
    assert list(resumed) == list(full)[4:] and len(resumed) == len(full)  # len stays the epoch's (Lightning counts)
    resumed.set_epoch(3)
    full.set_epoch(3)
    assert list(resumed) == list(full)
    with pytest.raises(ValueError, match="samples_done must be >= 0"):
        resumed.resume(0, -1)
