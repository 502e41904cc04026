"""Vision encoders: images (padded to a batch, with a patch mask) to one feature per patch."""

from vlmkit.vision.timm_encoder import TimmVisionEncoder
from vlmkit.vision.transformers_encoder import TransformersVisionEncoder

__all__ = ["TimmVisionEncoder", "TransformersVisionEncoder"]
