"""Padded image batches for padding-invariance and packing checks of vision encoders (8-px patches)."""

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


def padded_batch(
    sizes: tuple[tuple[int, int], ...] = ((24, 40), (40, 16), (40, 40), (16, 24)), seed: int = 2
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Images of ``sizes`` padded bottom/right to the largest side, their patch mask and each image alone.

    Returns:
        ``pixels [n, 3, H, W]``, ``patch_mask [n, H/8, W/8]`` and the ``n`` images ``[1, 3, h, w]``.
    """
    generator = torch.Generator().manual_seed(seed)
    images = [torch.randn(1, 3, h, w, generator=generator) for h, w in sizes]
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    pixels = torch.zeros(len(sizes), 3, height, width)
    patch_mask = torch.zeros(len(sizes), height // 8, width // 8, dtype=torch.bool)
    for i, (image, (h, w)) in enumerate(zip(images, sizes)):
        pixels[i, :, :h, :w] = image[0]
        patch_mask[i, : h // 8, : w // 8] = True
    return pixels, patch_mask, images
