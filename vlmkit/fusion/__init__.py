"""Fusion styles: how visual tokens enter the language model."""

from vlmkit.fusion.autoregressive import FullyAutoregressiveFusion

__all__ = ["FullyAutoregressiveFusion"]
