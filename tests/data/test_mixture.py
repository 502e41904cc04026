from collections import Counter

import pytest
from torch.utils.data import DataLoader

from vlmkit.data.formats import BadSample, Record
from vlmkit.data.mixture import MixtureStream
from vlmkit.data.stats import DataStats


class CountingSource:
    """Endless cheap records; every ``bad_every``-th one is bad."""

    def __init__(self, name, weight, bad_every=0, size=None):
        self.name, self.weight, self.max_length = name, weight, 64
        self.bad_every, self.size = bad_every, size

    def records(self, rank, world, seed, endless):
        i = rank
        while self.size is None or i < self.size:
            if self.bad_every and i % self.bad_every == self.bad_every - 1:
                yield BadSample("corrupt_image", f"{self.name}:{i}")
            else:
                yield Record(f"{self.name}:{i}", "pair", {})
            i += world


class NameRenderer:
    def __call__(self, record, rng=None):
        return {"source": record.key.split(":")[0], "key": record.key, "dropped_images": 0}


def stream(sources, seed=0, endless=True, workers=0):
    stats = DataStats([s.name for s in sources], workers)
    return MixtureStream(sources, [NameRenderer()] * len(sources), stats, seed=seed, endless=endless), stats


def take(dataset, n):
    it = iter(dataset)
    return [next(it) for _ in range(n)]


def test_mixture_proportions_match_the_weights():
    sources = [CountingSource("interleaved", 0.45), CountingSource("pairs", 0.35), CountingSource("pdfs", 0.2)]
    dataset, stats = stream(sources)
    counts = Counter(s["source"] for s in take(dataset, 4000))
    for source in sources:
        assert counts[source.name] / 4000 == pytest.approx(source.weight, abs=0.025)
    assert stats.proportions() == {name: counts[name] / 4000 for name in counts}


def test_mixture_is_deterministic_by_seed():
    sources = [CountingSource("a", 1.0), CountingSource("b", 2.0)]
    assert take(stream(sources, seed=3)[0], 200) == take(stream(sources, seed=3)[0], 200)
    assert take(stream(sources, seed=3)[0], 200) != take(stream(sources, seed=4)[0], 200)


def test_bad_samples_are_counted_per_source_and_reason_across_workers():
    sources = [CountingSource("a", 1.0, bad_every=4, size=40), CountingSource("b", 1.0, size=20)]
    dataset, stats = stream(sources, endless=False, workers=2)
    keys = [s["key"] for s in DataLoader(dataset, batch_size=None, num_workers=2)]
    assert len(keys) == len(set(keys)) == 30 + 20
    assert stats.totals() == {"a/ok": 30, "a/corrupt_image": 10, "b/ok": 20}
    assert stats.bad_fraction() == (10 / 60, 60)
    assert "corrupt_image: 10" in stats.report()


def test_finite_mixture_reads_each_source_once():
    sources = [CountingSource("a", 1.0, size=5), CountingSource("b", 9.0, size=3)]
    keys = [s["key"] for s in stream(sources, endless=False)[0]]
    assert sorted(keys) == sorted([f"a:{i}" for i in range(5)] + [f"b:{i}" for i in range(3)])


def test_skip_warnings_are_rate_limited_and_counted(caplog):
    import logging

    from vlmkit.data.stats import SkipLog

    sources = [CountingSource("a", 1.0, bad_every=2, size=2000), CountingSource("b", 1.0, size=10)]
    dataset, stats = stream(sources, endless=False)
    with caplog.at_level("WARNING", logger="vlmkit.data.mixture"):
        assert len(list(dataset)) == 1000 + 10
    assert stats.totals()["a/corrupt_image"] == 1000  # every skip is counted...
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 + 8  # ...but logged 1, 2, 3, then 4, 8, ..., 512 times: not 1,000 lines
    assert "512 corrupt_image so far here; next message at 1024" in lines[-1]
    assert "3 corrupt_image so far here; next message at 4" in lines[2]
    log = SkipLog(logging.getLogger("test"), first=1)
    logged = [log("s", BadSample("r", "x")) for _ in range(9)]
    assert logged == [True, True, False, True, False, False, False, True, False]


class PassSource(CountingSource):
    """Endless passes over ``shards`` (each pass: ``good`` records, then ``bad`` ones, then a PassEnd)."""

    def __init__(self, name, good, bad, shards=("s0.tar", "s1.tar")):
        super().__init__(name, 1.0)
        self.good, self.bad, self.shards = good, bad, tuple(shards)

    def records(self, rank, world, seed, endless):
        from vlmkit.data.formats import PassEnd

        for _ in range(1000):  # the test fails instead of hanging
            for shard in self.shards:
                yield from (Record(f"{self.name}:{shard}:{i}", "pair", {}) for i in range(self.good))
                yield from (BadSample("empty_shard", f"shard {shard}") for _ in range(self.bad))
                yield PassEnd((shard,), self.shards)


def test_a_source_that_yields_nothing_in_a_full_pass_stops_the_stream():
    from vlmkit.data.mixture import EmptySourceError

    dataset, _ = stream([CountingSource("good", 1.0), PassSource("dead", good=0, bad=1)])
    expected = r"source 'dead' gave no usable sample .*\[s0.tar, s1.tar\].*empty_shard"
    with pytest.raises(EmptySourceError, match=expected):
        take(dataset, 10_000)
    alive, _ = stream([CountingSource("good", 1.0), PassSource("sparse", good=1, bad=5)])
    assert len(take(alive, 3000)) == 3000  # a source with some usable samples in each pass keeps going
