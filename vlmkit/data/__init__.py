"""Data: synthetic tasks, image processing, the one rendering path, collation, webdataset shards and mixtures.

The names below are loaded on first use, so ``vlmkit data --help`` (and any tool that reads only the shard formats)
does not import torch.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "ImageProcessor": "vlmkit.data.image_processing",
    "MixtureDataModule": "vlmkit.data.mixture_datamodule",
    "ShardSource": "vlmkit.data.shard_source",
    "SyntheticSource": "vlmkit.data.synthetic_sources",
    "SyntheticVQADataModule": "vlmkit.data.synthetic_datamodule",
    "VLMCollator": "vlmkit.data.collate",
    "VLMProcessor": "vlmkit.data.processor",
    "pad_images": "vlmkit.data.collate",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlmkit.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
