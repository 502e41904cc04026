import json

import numpy as np
import pytest

from vlmkit.data.formats import FORMATS, validate
from vlmkit.data.synthetic_sources import SyntheticSource, synthetic_record, write_synthetic_jsonl


@pytest.mark.parametrize("format", FORMATS)
def test_synthetic_records_are_valid_and_deterministic(format):
    for index in range(20):
        record = synthetic_record(format, 3, index)
        assert len(validate(format, record.data)) == len(record.images)
        again = synthetic_record(format, 3, index)
        assert record.data == again.data
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(record.images, again.images))
    assert synthetic_record(format, 3, 0).data != synthetic_record(format, 4, 0).data or format == "pdf"


def test_conversations_mix_text_only_and_multi_turn():
    records = [synthetic_record("conversation", 0, i) for i in range(200)]
    text_only = sum(not r.images for r in records) / len(records)
    assert 0.1 < text_only < 0.3
    assert any(len(r.data["texts"]) > 1 for r in records)


def test_jsonl_layout_and_source_split(tmp_path):
    path = write_synthetic_jsonl("interleaved", 3, tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        for ref in filter(None, row["images"]):
            assert (tmp_path / ref).is_file()
    source = SyntheticSource("pair", num_samples=10)
    keys = [[r.key for r in source.records(rank, 3, 0, endless=False)] for rank in range(3)]
    assert sorted(sum(keys, [])) == [f"{i:08d}" for i in range(10)]
    with pytest.raises(ValueError, match="format"):
        SyntheticSource("video")


def test_pairs_can_carry_noisy_alt_texts_beside_clean_synthetic_captions():
    clean = [synthetic_record("pair", 0, i) for i in range(50)]
    noisy = [synthetic_record("pair", 0, i, alt_text_noise=0.5) for i in range(50)]
    assert [r.data["synthetic_caption"] for r in clean] == [r.data["synthetic_caption"] for r in noisy]
    assert all(np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0])) for a, b in zip(clean, noisy))
    assert all(r.data["caption"] == r.data["synthetic_caption"].removeprefix("an image of ") for r in clean)
    changed = sum(a.data["caption"] != b.data["caption"] for a, b in zip(clean, noisy))
    assert changed == 50  # alt-texts never read like the caption (no articles, no punctuation)
    source = SyntheticSource("pair", num_samples=3, alt_text_noise=0.5)
    assert [r.data for r in source.records(0, 1, 0, endless=False)] == [r.data for r in noisy[:3]]
    with pytest.raises(ValueError, match="alt_text_noise"):
        SyntheticSource("pair", alt_text_noise=2.0)
