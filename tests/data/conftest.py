"""Fixtures of the data-pipeline tests: small synthetic shard sets of every format (built once)."""

import pytest

from vlmkit.data.shards import read_input, write_shards
from vlmkit.data.synthetic_sources import write_synthetic_jsonl

FORMATS = ("pair", "pdf", "interleaved", "conversation")


def build_shards(root, format, num=24, per_shard=6):
    raw = root / "raw" / format
    write_synthetic_jsonl(format, num, raw, seed=0)
    return write_shards(read_input(raw, format), root / "shards" / format, format, per_shard), root / "shards" / format


@pytest.fixture(scope="session")
def shard_dirs(tmp_path_factory):
    """``{format: shard folder}``: 24 synthetic samples of each format, 6 per shard."""
    root = tmp_path_factory.mktemp("shards")
    return {f: build_shards(root, f)[1] for f in FORMATS}
