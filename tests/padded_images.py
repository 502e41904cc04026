"""Padded image pairs for padding-invariance checks of vision encoders."""

import torch


def padded_pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 24x40 and a 40x16 image, alone and padded to 40x40 with a [2, 5, 5] patch mask."""
    generator = torch.Generator().manual_seed(1)
    first = torch.randn(1, 3, 24, 40, generator=generator)
    second = torch.randn(1, 3, 40, 16, generator=generator)
    pixels = torch.zeros(2, 3, 40, 40)
    pixels[0, :, :24, :40] = first[0]
    pixels[1, :, :40, :16] = second[0]
    patch_mask = torch.zeros(2, 5, 5, dtype=torch.bool)
    patch_mask[0, :3, :5] = True
    patch_mask[1, :5, :2] = True
    return pixels, patch_mask, first, second


def real_patches(features: torch.Tensor, rows: int, cols: int, grid_cols: int = 5) -> torch.Tensor:
    """``[p, d]`` features of a padded image's top-left ``rows x cols`` patches, row-major."""
    return features.reshape(-1, grid_cols, features.shape[-1])[:rows, :cols].reshape(rows * cols, -1)
