"""Data: synthetic tasks, image processing, processors, collation, webdataset shards and mixtures."""

from vlmkit.data.collate import VLMCollator, pad_images
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.processor import VLMProcessor
from vlmkit.data.shard_datamodule import MixtureDataModule
from vlmkit.data.sources import SyntheticSource
from vlmkit.data.synthetic_datamodule import SyntheticVQADataModule
from vlmkit.data.webdataset_source import ShardSource

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
