"""What the vision encoders share: the patch grid of a padded batch, its positions, and running only real patches.

A padded batch is described by ``patch_mask`` (True on real patches, one top-left rectangle per image); every encoder
reduces it to each image's ``(rows, cols)`` of real patches, which is all positions and masks need. Positions come
from the pretrained table per image (:data:`PositionEmbedding`); padding is kept away from real patches by a
block-diagonal mask, or dropped altogether by patch packing (:mod:`vlmkit.vision.patch_packing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from vlmkit.checks import check_true, host_reads_are_free
from vlmkit.vision.patch_packing import packed_forward

PositionEmbedding = Literal["interpolate", "bucket"]
"""How an image's own patch grid gets positions from the pretrained table: ``interpolate`` (the table resampled to the
grid) or ``bucket`` (Idefics2's fractional-coordinate buckets of the pretrained grid, no resampling)."""


def check_position_embedding(value: str | None, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a :data:`PositionEmbedding` (or ``None`` when allowed)."""
    if value not in ("interpolate", "bucket") and not (allow_none and value is None):
        raise ValueError(f"position_embedding must be 'interpolate' or 'bucket', got {value!r}.")


def layers_to_run(feature_layer: int, num_layers: int) -> int:
    """How many of ``num_layers`` layers run to return hidden state ``feature_layer`` (0 = embeddings, -1 = last).

    Raises:
        ValueError: If ``feature_layer`` is outside ``[-(num_layers + 1), num_layers]``.
    """
    if not -(num_layers + 1) <= feature_layer <= num_layers:
        raise ValueError(f"feature_layer must be in [{-(num_layers + 1)}, {num_layers}], got {feature_layer}.")
    return feature_layer % (num_layers + 1)


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


def positions_per_grid(
    grid_sizes: torch.Tensor,
    rows: int,
    cols: int,
    table: torch.Tensor,
    positions_for: Callable[[int, int], torch.Tensor],
) -> torch.Tensor:
    """Position embeddings ``[n, rows*cols, d]`` for each image's own real grid, zero on padding patches.

    Args:
        grid_sizes: ``[n, 2]`` rows and columns of real patches per image.
        rows: Patch rows of the padded batch.
        cols: Patch columns of the padded batch.
        table: The pretrained table (its dtype, device and width ``d`` are the result's).
        positions_for: ``(h, w) -> [h * w, d]`` (row-major) positions of an ``h x w`` grid, called once per size.

    Returns:
        ``[n, rows*cols, d]``, or ``[1, rows*cols, d]`` when no image is padded (one grid serves all).
    """
    sizes = [tuple(size) for size in grid_sizes.tolist()]
    if len(set(sizes)) == 1 and sizes[0] == (rows, cols):  # no padding: one grid for all
        return positions_for(rows, cols).reshape(1, rows * cols, -1)
    positions = table.new_zeros(len(sizes), rows, cols, table.shape[-1])  # [n, rows, cols, d]
    for h, w in set(sizes):
        if h and w:
            images = torch.tensor([size == (h, w) for size in sizes], device=table.device)
            positions[images, :h, :w] = positions_for(h, w).reshape(h, w, -1)
    return positions.flatten(1, 2)


def run_on_real_patches(
    tokens: torch.Tensor,
    patch_mask: torch.Tensor | None,
    num_prefix_tokens: int,
    patch_packing: bool,
    masked: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    packed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Run an encoder's layers over a padded batch so that padding never reaches a real patch.

    Args:
        tokens: ``[n, prefix + rows*cols, d]`` prefix tokens (CLS, registers) then the patches, row-major.
        patch_mask: ``[n, rows, cols]`` True on real patches, or None (no padding).
        num_prefix_tokens: Prefix tokens per image (always real).
        patch_packing: Run the real tokens of all images as one sequence (``packed``) instead of masking padding.
        masked: ``(tokens [n, s, d], real [n, s] | None) -> [n, s, d]``: the layers with padding kept apart by a
            block-diagonal mask built from ``real`` (``None``: nothing to mask).
        packed: ``(packed [1, S, d], lengths [n]) -> [1, S, d]``: the layers over one sequence of segments.

    Returns:
        ``[n, prefix + rows*cols, d]`` (zeros on padding when packed; unspecified values when masked).
    """
    if patch_mask is None or (host_reads_are_free(patch_mask) and bool(patch_mask.all())):  # no padding
        # nothing to mask or pack (off CPU the masked path runs: same features, no wait for the device)
        return masked(tokens, None)
    real = patch_mask.flatten(1)  # [n, rows*cols]
    real = torch.cat([real.new_ones(tokens.shape[0], num_prefix_tokens), real], dim=1)  # [n, prefix + rows*cols]
    if patch_packing:  # [1, S, d] through the layers, back to [n, prefix + rows*cols, d]
        return packed_forward(tokens, real, packed)
    return masked(tokens, real)
