"""Fusion styles: how visual tokens enter the language model."""

from vlmkit.fusion.autoregressive import FullyAutoregressiveFusion
from vlmkit.fusion.cross_attention import CrossAttentionFusion, GatedCrossAttentionBlock

__all__ = ["CrossAttentionFusion", "FullyAutoregressiveFusion", "GatedCrossAttentionBlock"]
