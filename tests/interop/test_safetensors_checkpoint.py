"""Reading a checkpoint's safetensors headers: single files, shards and their index, strictly."""

import json

import pytest
import torch
from safetensors.torch import save_file

from vlmkit.interop.safetensors_checkpoint import SafetensorsCheckpoint


def _shards(path, shards, weight_map):
    for name, tensors in shards.items():
        save_file(tensors, path / name, metadata={"format": "pt"})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_shards_are_read_through_their_index(tmp_path):
    _shards(
        tmp_path,
        {"a.safetensors": {"x": torch.ones(2, 3)}, "b.safetensors": {"y": torch.arange(4, dtype=torch.float64)}},
        {"x": "a.safetensors", "y": "b.safetensors"},
    )
    checkpoint = SafetensorsCheckpoint.open(str(tmp_path))
    assert checkpoint.shapes == {"x": (2, 3), "y": (4,)}
    tensors = checkpoint.load(["x", "y"], dtype=torch.float32)
    assert torch.equal(tensors["y"], torch.arange(4.0)) and tensors["y"].dtype == torch.float32


def test_index_and_shards_that_disagree_are_named(tmp_path):
    _shards(
        tmp_path,
        {"a.safetensors": {"x": torch.ones(1), "z": torch.ones(1)}, "b.safetensors": {"x": torch.ones(1)}},
        {"x": "a.safetensors", "y": "a.safetensors", "w": "b.safetensors"},
    )
    with pytest.raises(ValueError) as error:
        SafetensorsCheckpoint.open(str(tmp_path))
    message = str(error.value)
    assert "z is in a.safetensors but the index lists it under None" in message
    assert "x is in both a.safetensors and b.safetensors" in message
    assert "y is listed under a.safetensors but that shard does not hold it" in message
    assert "w is listed under b.safetensors but that shard does not hold it" in message


def test_missing_shard_and_pickled_weights_are_errors(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "gone.safetensors"}}))
    with pytest.raises(FileNotFoundError, match=r"lists shards that do not exist: \['gone.safetensors'\]"):
        SafetensorsCheckpoint.open(str(tmp_path))
    (tmp_path / "model.safetensors.index.json").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="holds \\['pytorch_model.bin'\\], which vlmkit never unpickles"):
        SafetensorsCheckpoint.open(str(tmp_path))
