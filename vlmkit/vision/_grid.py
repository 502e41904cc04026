"""Patch-grid helpers shared by the vision encoders: input validation, real-patch rectangles, bucketed positions.

A padded batch is described by ``patch_mask`` (True on real patches, one top-left rectangle per image); both
encoders reduce it to each image's ``(rows, cols)`` of real patches, which is all positions and masks need.
"""

from __future__ import annotations

import torch

from vlmkit.checks import check_true


def real_grid_sizes(pixel_values: torch.Tensor, patch_mask: torch.Tensor | None, patch_size: int) -> torch.Tensor:
    """Validate the encoder inputs and return each image's real patch grid.

    Args:
        pixel_values: ``[n, C, H, W]`` pixels.
        patch_mask: ``[n, H/patch_size, W/patch_size]`` bool, True on real patches, or None (all real).
        patch_size: Side of a square patch in pixels.

    Returns:
        ``[n, 2]`` long tensor of (rows, cols) of real patches per image.

    Raises:
        ValueError: If ``H``/``W`` are not multiples of ``patch_size`` (the message names the shape), or
            ``patch_mask`` has the wrong shape or is not a top-left rectangle per image.
    """
    if pixel_values.ndim != 4 or pixel_values.shape[2] % patch_size or pixel_values.shape[3] % patch_size:
        raise ValueError(
            f"pixel_values must be [n, C, H, W] with H and W multiples of patch_size={patch_size}, "
            f"got shape {tuple(pixel_values.shape)}."
        )
    n, _, height, width = pixel_values.shape
    rows, cols = height // patch_size, width // patch_size
    if patch_mask is None:
        return torch.tensor([[rows, cols]], device=pixel_values.device).expand(n, 2)
    if tuple(patch_mask.shape) != (n, rows, cols):
        raise ValueError(f"patch_mask must have shape {(n, rows, cols)}, got {tuple(patch_mask.shape)}.")
    patch_mask = patch_mask.bool()
    grid_sizes = torch.stack([patch_mask[:, :, 0].sum(1), patch_mask[:, 0, :].sum(1)], dim=1)  # [n, 2]
    rectangles = (rectangle_mask(grid_sizes, rows, cols) == patch_mask).all()  # no host read: see vlmkit.checks
    check_true(rectangles, "patch_mask must mark a top-left rectangle of real patches in each image.")
    return grid_sizes


def rectangle_mask(grid_sizes: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``[n, rows, cols]`` bool, True inside each image's top-left ``h x w`` rectangle (``grid_sizes`` ``[n, 2]``)."""
    device = grid_sizes.device
    in_rows = torch.arange(rows, device=device)[None, :, None] < grid_sizes[:, 0, None, None]
    in_cols = torch.arange(cols, device=device)[None, None, :] < grid_sizes[:, 1, None, None]
    return in_rows & in_cols


def same_segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """``[n, 1, s, s]`` bool attention mask letting each token see only tokens of its own segment.

    ``segments`` is ``[n, s]``: bool "is real" (real tokens see real tokens, padding sees padding) or integer segment
    ids (a packed sequence: each image sees itself). Block-diagonal rather than key-padding only, so no query row is
    empty (no NaNs) and padding neither attends to nor is attended by real tokens.
    """
    return segments[:, None, :, None] == segments[:, None, None, :]


def bucket_position_ids(
    grid_sizes: torch.Tensor, rows: int, cols: int, grid_side: int | tuple[int, int]
) -> torch.Tensor:
    """Idefics2's position ids: each patch's fractional coordinate in its image, bucketed on the pretrained grid.

    The arithmetic follows ``Idefics2VisionEmbeddings.forward`` operation for operation, so ids are bit-identical.
    Being float32 arithmetic, it is the identity at the pretrained size for the usual sides (14, 16, 24, 27, 32, 37,
    64, 70) but not for every side (e.g. 19, 25, 40 repeat a row): that is the released model's behaviour, kept.

    Args:
        grid_sizes: ``[n, 2]`` rows and columns of real patches per image.
        rows: Patch rows of the padded batch.
        cols: Patch columns of the padded batch.
        grid_side: Side of the pretrained square position grid, or its ``(rows, cols)`` if not square.

    Returns:
        ``[n, rows*cols]`` long ids into the row-major pretrained table; 0 on padding patches.
    """
    device = grid_sizes.device
    side_h, side_w = (grid_side, grid_side) if isinstance(grid_side, int) else grid_side
    boundaries_h = torch.arange(1 / side_h, 1.0, 1 / side_h, device=device)
    boundaries_w = torch.arange(1 / side_w, 1.0, 1 / side_w, device=device)
    step_h = 1.0 / grid_sizes[:, 0]  # [n]
    step_w = 1.0 / grid_sizes[:, 1]  # [n]
    coords_h = torch.arange(rows, device=device, dtype=torch.float32)[None, :] * step_h[:, None]  # [n, rows]
    coords_w = torch.arange(cols, device=device, dtype=torch.float32)[None, :] * step_w[:, None]  # [n, cols]
    bucket_h = torch.bucketize(torch.clamp(coords_h, max=1.0 - 1e-6), boundaries_h, right=True)
    bucket_w = torch.bucketize(torch.clamp(coords_w, max=1.0 - 1e-6), boundaries_w, right=True)
    ids = bucket_h[:, :, None] * side_w + bucket_w[:, None, :]  # [n, rows, cols]
    real = rectangle_mask(grid_sizes, rows, cols)  # [n, rows, cols]
    return torch.where(real, ids, 0).flatten(1)
