import io
import json
import tarfile
from collections import Counter

import pytest
from PIL import Image
from torch.utils.data import DataLoader

from vlmkit.data.formats import BadSample, Record
from vlmkit.data.mixture import MixtureStream
from vlmkit.data.shard_source import ShardSource, expand_urls
from vlmkit.data.shards import ShardItem, write_shards
from vlmkit.data.stats import DataStats


def _png(width=16, height=16):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def _member_offsets(path):
    with tarfile.open(path) as tar:
        return {m.name: m.offset_data for m in tar.getmembers()}


def _keys(source, rank=0, world=1, seed=0):
    return [r.key for r in source.records(rank, world, seed, endless=False) if isinstance(r, Record)]


class KeyRenderer:
    """Stands in for SampleRenderer: the sample is just the record's key."""

    def __call__(self, record, rng=None):
        return {"key": record.key, "dropped_images": 0}


def decoded(record):
    """``record`` after decoding its images as the renderer does, or the ``BadSample`` that raises."""
    if isinstance(record, Record):
        try:
            for image in record.images:
                image.decode()
        except BadSample as bad:
            return bad
    return record


def test_ranks_read_disjoint_shards_covering_everything(shard_dirs):
    source = ShardSource(str(shard_dirs["pair"]), "pair", shuffle_buffer=8)
    parts = [_keys(source, rank, 3) for rank in range(3)]
    assert sum(len(p) for p in parts) == 24
    assert len(set().union(*map(set, parts))) == 24  # disjoint and complete


def test_dataloader_workers_read_disjoint_shards_and_counts_survive(shard_dirs):
    source = ShardSource(str(shard_dirs["pdf"]), "pdf", shuffle_buffer=4)
    stats = DataStats([source.name], num_readers=2)
    stream = MixtureStream([source], [KeyRenderer()], stats, seed=0, endless=False)
    keys = [s["key"] for s in DataLoader(stream, batch_size=None, num_workers=2)]
    assert sorted(keys) == sorted(_keys(source)) and len(set(keys)) == 24
    assert stats.totals() == {"pdf/ok": 24}  # written by the worker processes, read here


def test_shuffle_is_seeded(shard_dirs):
    source = ShardSource(str(shard_dirs["pair"]), "pair", shuffle_buffer=10)
    assert _keys(source, seed=1) == _keys(source, seed=1)
    assert _keys(source, seed=1) != _keys(source, seed=2)
    assert sorted(_keys(source, seed=1)) == sorted(_keys(source, seed=2))


def test_endless_passes_reshuffle_and_resampled_draws_with_replacement(shard_dirs):
    source = ShardSource(str(shard_dirs["pair"]), "pair", shuffle_buffer=10)
    stream = (r for r in source.records(0, 1, 0, endless=True) if isinstance(r, Record))  # not the PassEnd markers
    first, second = [next(stream).key for _ in range(24)], [next(stream).key for _ in range(24)]
    assert sorted(first) == sorted(second) and first != second
    resampled = ShardSource(str(shard_dirs["pair"]), "pair", resampled=True, shuffle_buffer=0)
    stream = resampled.records(0, 1, 0, endless=False)  # resampled streams never end
    assert len([next(stream) for _ in range(100)]) == 100


def test_local_file_and_pipe_urls(shard_dirs):
    folder = shard_dirs["pdf"]
    pattern = str(folder / "shard-{000000..000003}.tar")
    assert expand_urls(pattern) == expand_urls(str(folder))
    expected = _keys(ShardSource(str(folder), "pdf", shuffle_buffer=0, shuffle_shards=False))
    for urls in (pattern, "file://" + pattern, f"pipe:cat {pattern}"):
        assert _keys(ShardSource(urls, "pdf", shuffle_buffer=0, shuffle_shards=False)) == expected


def test_manifest_format_is_checked(shard_dirs):
    with pytest.raises(ValueError, match="manifest"):
        ShardSource(str(shard_dirs["pair"]), "pdf")


def test_every_bad_input_is_skipped_and_counted(tmp_path):
    good = json.dumps({"images": ["0.png"], "caption": "a red square"}).encode()
    png = _png()
    _tar(
        tmp_path / "a.tar",
        [
            ("ok1.json", good), ("ok1.0.png", png),
            ("corrupt.json", good), ("corrupt.0.png", b"\x89PNG garbage"),
            ("truncated.json", good), ("truncated.0.png", png[: len(png) // 2]),
            ("nofield.json", json.dumps({"images": ["0.png"]}).encode()), ("nofield.0.png", png),
            ("noimage.json", good),
            ("latin1.json", '{"images": ["0.png"], "caption": "caf\xe9"}'.encode("latin-1")), ("latin1.0.png", png),
            ("long.json", good), ("long.0.png", _png(20000, 20)),
            ("ok2.json", good), ("ok2.0.png", png),
        ],
    )  # fmt: skip
    _tar(tmp_path / "b.tar", [])  # a valid tar without samples
    (tmp_path / "c.tar").write_bytes(b"")  # an empty file
    full = (tmp_path / "a.tar").read_bytes()
    cut = _member_offsets(tmp_path / "a.tar")["corrupt.json"] + 10
    (tmp_path / "d.tar").write_bytes(full[:cut])  # cut inside corrupt.json's data: ok1 is whole
    urls = [str(tmp_path / f"{n}.tar") for n in "abcd"]
    source = ShardSource(urls, "pair", shuffle_buffer=0, shuffle_shards=False)
    records = [decoded(r) for r in source.records(0, 1, 0, endless=False)]  # pixels are decoded when rendered
    good_keys = [r.key for r in records if isinstance(r, Record)]
    reasons = Counter(r.reason for r in records if isinstance(r, BadSample))
    assert good_keys == ["ok1", "ok2", "ok1"]  # d.tar's readable head still counts
    assert reasons["corrupt_image"] >= 2 and reasons["missing_field"] >= 1 and reasons["missing_image"] >= 1
    assert reasons["non_utf8_text"] >= 1 and reasons["extreme_aspect_ratio"] >= 1
    assert reasons["empty_shard"] == 2 and reasons["truncated_tar"] == 1
    details = [str(r) for r in records if isinstance(r, BadSample)]
    assert any("corrupt" in d and "a.tar" in d for d in details)  # messages name the shard and key


def test_tar_cut_at_a_member_boundary_is_caught_by_the_manifest(tmp_path, shard_dirs):
    folder = tmp_path / "shards"
    folder.mkdir()
    for path in shard_dirs["pair"].iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    shard = folder / "shard-000001.tar"
    second = sorted(_member_offsets(shard).values())[2] - 512  # the header of the second sample's json
    shard.write_bytes(shard.read_bytes()[:second])  # a valid-looking tar of one sample
    records = list(ShardSource(str(folder), "pair", shuffle_buffer=0).records(0, 1, 0, endless=False))
    bad = [r for r in records if isinstance(r, BadSample)]
    assert [b.reason for b in bad] == ["truncated_tar"]
    assert "shard-000001.tar: 1 samples read, its manifest lists 6" in bad[0].detail


def test_bad_image_member_in_a_built_shard(tmp_path):
    items = [ShardItem("k0", {"images": ["0.png"], "text": "x"}, [("0.png", b"broken")])]
    write_shards(items, tmp_path, "pdf")
    [bad] = ShardSource(str(tmp_path), "pdf").records(0, 1, 0, endless=False)
    assert isinstance(bad, BadSample) and bad.reason == "corrupt_image" and "k0" in bad.detail


def test_a_shard_listed_in_the_manifest_but_missing_is_its_own_reason(tmp_path, shard_dirs):
    folder = tmp_path / "shards"
    folder.mkdir()
    for path in shard_dirs["pdf"].iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "shard-000002.tar").unlink()
    records = list(ShardSource(str(folder), "pdf", shuffle_buffer=0).records(0, 1, 0, endless=False))
    bad = [r for r in records if isinstance(r, BadSample)]
    assert [b.reason for b in bad] == ["missing_shard"]
    assert "shard-000002.tar does not exist" in bad[0].detail
    assert len([r for r in records if isinstance(r, Record)]) == 18
