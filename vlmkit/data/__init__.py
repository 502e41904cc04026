"""Data: synthetic tasks, image processing, processors and collation."""

from vlmkit.data.collate import VLMCollator, pad_images
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.processor import VLMProcessor
from vlmkit.data.synthetic_datamodule import SyntheticVQADataModule

__all__ = ["ImageProcessor", "SyntheticVQADataModule", "VLMCollator", "VLMProcessor", "pad_images"]
