"""Data: synthetic tasks, image processing, the one rendering path, collation, webdataset shards and mixtures."""

from vlmkit.data.collate import VLMCollator, pad_images
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.mixture_datamodule import MixtureDataModule
from vlmkit.data.processor import VLMProcessor
from vlmkit.data.shard_source import ShardSource
from vlmkit.data.synthetic_datamodule import SyntheticVQADataModule
from vlmkit.data.synthetic_sources import SyntheticSource

__all__ = [
    "ImageProcessor",
    "MixtureDataModule",
    "ShardSource",
    "SyntheticSource",
    "SyntheticVQADataModule",
    "VLMCollator",
    "VLMProcessor",
    "pad_images",
]
