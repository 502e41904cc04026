"""The safetensors weights of a transformers checkpoint, read directly: one file or shards with an index.

Reading the files (instead of ``from_pretrained``) is what makes import strict: the tensor names and shapes come
from the files' headers, so a deleted, renamed, extra or reshaped tensor is seen before anything loads, and no
weight is ever initialised at random in place of a missing one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = ["SafetensorsCheckpoint"]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class SafetensorsCheckpoint:
    """Where each tensor of a checkpoint lives, and its shape.

    Attributes:
        source: The checkpoint directory or hub name, for messages.
        files: Tensor name -> the local safetensors file holding it.
        shapes: Tensor name -> its shape, from the file header (nothing is loaded).
    """

    source: str
    files: dict[str, str]
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def open(cls, path_or_name: str) -> SafetensorsCheckpoint:
        """Index the tensors of ``model.safetensors`` or of the shards listed in ``model.safetensors.index.json``.

        Args:
            path_or_name: Local checkpoint directory, or a hub name on machines with network.

        Raises:
            FileNotFoundError: If the checkpoint has no safetensors weights (pickled ``pytorch_model.bin`` weights
                are never read), or a shard of the index is missing.
            ValueError: If the index and its shards disagree: a tensor listed for a shard that does not hold it, a
                tensor in a shard the index does not list, or one tensor in two files (all named).
        """
        from safetensors import safe_open

        index_path = _resolve(path_or_name, INDEX_FILE)
        if index_path is not None:
            with open(index_path) as handle:
                weight_map: dict[str, str] = json.load(handle).get("weight_map", {})
            shard_names = sorted(set(weight_map.values()))
        else:
            weight_map, shard_names = {}, [SINGLE_FILE]
        shards = {name: _resolve(path_or_name, name) for name in shard_names}
        if index_path is None and shards[SINGLE_FILE] is None:
            pickled = [name for name in _PICKLE_FILES if _resolve(path_or_name, name) is not None]
            found = f"; it holds {pickled}, which vlmkit never unpickles" if pickled else ""
            raise FileNotFoundError(f"{path_or_name}: no {SINGLE_FILE} or {INDEX_FILE}{found}")
        absent = sorted(name for name, path in shards.items() if path is None)
        if absent:
            raise FileNotFoundError(f"{path_or_name}: {INDEX_FILE} lists shards that do not exist: {absent}")

        files: dict[str, str] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        problems: list[str] = []
        for name, path in shards.items():
            with safe_open(path, framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open is no dict)
                    if key in files:
                        problems.append(f"{key} is in both {os.path.basename(files[key])} and {name}")
                        continue
                    if index_path is not None and weight_map.get(key) != name:
                        problems.append(f"{key} is in {name} but the index lists it under {weight_map.get(key)}")
                    files[key], shapes[key] = path, tuple(handle.get_slice(key).get_shape())
        problems += [
            f"{key} is listed under {shard} but that shard does not hold it"
            for key, shard in sorted(weight_map.items())
            if key not in files
        ]
        if problems:
            raise ValueError(f"{path_or_name}: {INDEX_FILE} and its shards disagree: " + "; ".join(problems))
        return cls(str(path_or_name), files, shapes)

    def load(self, names: Iterable[str], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The tensors ``names`` on CPU, each file opened once; floating tensors cast to ``dtype`` when given."""
        from safetensors import safe_open

        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self.files[name], []).append(name)
        tensors = {}
        for path, keys in by_file.items():
            with safe_open(path, framework="pt") as handle:
                for key in keys:
                    tensor = handle.get_tensor(key)
                    if dtype is not None and tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    tensors[key] = tensor
        return tensors


def _resolve(path_or_name: str, filename: str) -> str | None:
    """The local path of ``filename`` in a checkpoint directory or hub repository; ``None`` if it has none."""
    if os.path.isdir(path_or_name):
        path = os.path.join(path_or_name, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(str(path_or_name), filename)
    except EntryNotFoundError:
        return None
