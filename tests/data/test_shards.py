import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from vlmkit.data.formats import FORMATS, BadSample
from vlmkit.data.shard_source import ShardSource
from vlmkit.data.shards import ShardItem, read_hf_dataset, read_input, write_shards
from vlmkit.data.synthetic_sources import synthetic_record, write_synthetic_jsonl


def _png(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("format", FORMATS)
def test_round_trip_build_then_read_gives_the_same_samples(shard_dirs, format):
    source = ShardSource(str(shard_dirs[format]), format, shuffle_buffer=0, shuffle_shards=False)
    records = list(source.records(rank=0, world=1, seed=0, endless=False))
    assert len(records) == 24
    for index, record in enumerate(records):
        expected = synthetic_record(format, 0, index)
        assert not isinstance(record, BadSample), record
        for field in ("texts", "caption", "synthetic_caption", "text"):
            assert record.data.get(field) == expected.data.get(field)
        assert len(record.images) == len(expected.images)
        for got, want in zip(record.images, expected.images):
            assert np.array_equal(np.asarray(got.decode()), np.asarray(want))  # PNG is lossless: same pixels


def test_build_is_deterministic_and_respects_the_count_limit(tmp_path):
    raw = tmp_path / "raw"
    write_synthetic_jsonl("pair", 10, raw)
    a = write_shards(read_input(raw, "pair"), tmp_path / "a", "pair", max_samples_per_shard=4)
    b = write_shards(read_input(raw, "pair"), tmp_path / "b", "pair", max_samples_per_shard=4)
    assert a == b and [s["num_samples"] for s in a["shards"]] == [4, 4, 2] and a["num_samples"] == 10
    for shard in a["shards"]:
        assert (tmp_path / "a" / shard["name"]).read_bytes() == (tmp_path / "b" / shard["name"]).read_bytes()
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["format"] == "pair" and manifest["shards"][0]["name"] == "shard-000000.tar"
    with tarfile.open(tmp_path / "a" / "shard-000000.tar") as tar:
        names = tar.getnames()
        assert names[:2] == ["data_000000000.json", "data_000000000.0.png"]
        stored = json.loads(tar.extractfile(names[0]).read())
    assert stored["images"] == ["0.png"] and stored["caption"]


def test_byte_limit_closes_shards(tmp_path):
    items = [ShardItem(f"k{i}", {"images": ["0.png"], "text": "x"}, [("0.png", b"\0" * 3000)]) for i in range(6)]
    manifest = write_shards(items, tmp_path, "pdf", max_samples_per_shard=100, max_shard_bytes=20_480)
    assert [s["num_samples"] for s in manifest["shards"]] == [4, 2]  # 4 x 4,608 bytes + end blocks <= 20,480
    assert [s["num_bytes"] for s in manifest["shards"]] == [20_480, 10_240]


def test_bad_input_lines_are_skipped_and_counted_by_reason(tmp_path):
    write_synthetic_jsonl("pair", 3, tmp_path)
    (tmp_path / "images" / "bad.png").write_bytes(b"not an image")
    with (tmp_path / "data.jsonl").open("ab") as lines:
        lines.write(b'{"images": ["images/missing.png"], "caption": "a"}\n')
        lines.write(b'{"images": ["images/bad.png"], "caption": "a"}\n')
        lines.write(b'{"images": ["images/data_0.png"]}\n')
        lines.write(b'{"caption": "caf\xe9", "images": []}\n')
        lines.write(b"{not json\n")
    manifest = write_shards(read_input(tmp_path, "pair"), tmp_path / "out", "pair")
    assert manifest["num_samples"] == 3
    assert manifest["skipped"] == {
        "bad_json": 1,
        "corrupt_image": 1,
        "missing_field": 1,
        "missing_image": 1,
        "non_utf8_text": 1,
    }


@pytest.mark.integration  # importing `datasets` takes seconds
def test_saved_hf_dataset_is_an_input(tmp_path):
    datasets = pytest.importorskip("datasets")
    records = [synthetic_record("conversation", 0, i) for i in range(6)]
    rows = {
        "images": [[{"bytes": _png(im), "path": None} for im in r.images] for r in records],
        "texts": [r.data["texts"] for r in records],
    }
    features = datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "texts": [{"user": datasets.Value("string"), "assistant": datasets.Value("string")}],
        }
    )
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "hf"))
    items = list(read_input(tmp_path / "hf", "conversation"))
    assert [i.data["texts"] for i in items] == rows["texts"]
    assert [len(i.images) for i in items] == [len(r.images) for r in records]
    assert all(suffix == f"{k}.png" for i in items for k, (suffix, _) in enumerate(i.images))
    assert len(list(read_hf_dataset(tmp_path / "hf", "conversation"))) == 6
    first = next(i for i in items if i.images)
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(first.images[0][1]))), np.asarray(records[items.index(first)].images[0])
    )
