"""How an image is sized and split for a patch encoder: aspect ratio kept, sides multiples of the patch size.

Idefics2 paper, Finding 5 and section 3.4: the longest side is capped (980 px), the shortest raised towards a minimum
(378 px); image splitting gives 4 crops plus the image. Its successors (Idefics3, SmolVLM) tile instead: a grid of
encoder-sized tiles chosen from the resolution (:func:`tile_grid`). The data pipeline resizes and cuts with these
rules (:class:`~vlmkit.data.ImageProcessor`) and the model counts an image's tokens with them
(:meth:`~vlmkit.model.VisionLanguageModel.token_budget`), so both agree. Only sizes here: no pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MAX_TILED_SIDE", "ImageViews", "TileGrid", "plan_views", "target_size", "tile_grid"]


def target_size(height: int, width: int, patch_size: int, max_image_size: int, min_image_size: int) -> tuple[int, int]:
    """Resized ``(height, width)``: aspect ratio kept, sides multiples of ``patch_size``.

    The longest side never exceeds ``max_image_size``; the shortest is scaled up to
    ``min_image_size`` unless that would break the maximum (extreme aspect ratios).
    """
    longest, shortest = max(height, width), min(height, width)
    scale = 1.0
    if longest * scale > max_image_size:
        scale = max_image_size / longest
    if shortest * scale < min_image_size:
        scale = min(min_image_size / shortest, max_image_size / longest)
    cap = max(patch_size, max_image_size // patch_size * patch_size)

    def snap(side: float) -> int:
        return int(min(cap, max(patch_size, round(side / patch_size) * patch_size)))

    return snap(height * scale), snap(width * scale)


@dataclass(frozen=True)
class TileGrid:
    """Where one image's tiles come from.

    Attributes:
        height: Height the whole image is resized to before cutting (a multiple of the tile size).
        width: Width the whole image is resized to before cutting.
        rows: Tile rows (``height / tile_size``).
        cols: Tile columns (``width / tile_size``).
    """

    height: int
    width: int
    rows: int
    cols: int


@dataclass(frozen=True)
class ImageViews:
    """How one image enters the encoder: as itself, or split into ``rows x cols`` crops followed by itself.

    Attributes:
        height: Height of every view.
        width: Width of every view.
        rows: Crop rows of a split image (0: not split).
        cols: Crop columns of a split image (0: not split).
        tiles: Tiling: the size the whole image is resized to before it is cut.
    """

    height: int
    width: int
    rows: int = 0
    cols: int = 0
    tiles: TileGrid | None = None

    @property
    def count(self) -> int:
        """Number of views: the crops and the whole image, or 1."""
        return self.rows * self.cols + 1 if self.rows else 1


def plan_views(
    height: int,
    width: int,
    patch_size: int,
    max_image_size: int,
    min_image_size: int,
    split_images: bool = False,
    scale: float = 1.0,
    tile_size: int | None = None,
    square: bool = False,
) -> ImageViews:
    """The views a ``height x width`` image gives (from its size alone: nothing is decoded).

    Args:
        height: Original height.
        width: Original width.
        patch_size: The encoder's patch size.
        max_image_size: Cap on the longest side (with ``tile_size``: the longest side images are resized to before
            they are tiled).
        min_image_size: Target for the shortest side (not used with ``tile_size``).
        split_images: Split into crops + the whole image: the 4 quadrants, or with ``tile_size`` the tile grid.
        scale: Upscaling factor drawn for this image (not used with ``tile_size``).
        tile_size: Tile as Idefics3 does; every view is then one ``tile_size`` square.
        square: Resize every view to ``max_image_size`` x ``max_image_size`` (rounded down to the patch size),
            aspect ratio not kept: the paper's Table 5 baseline.
    """
    if tile_size is not None:
        view_height = view_width = tile_size
    elif square:
        view_height = view_width = max(patch_size, max_image_size // patch_size * patch_size)
    else:
        view_height, view_width = target_size(
            round(height * scale), round(width * scale), patch_size, max_image_size, min_image_size
        )
    if not split_images:
        return ImageViews(view_height, view_width)
    if tile_size is None:
        return ImageViews(view_height, view_width, 2, 2)
    grid = tile_grid(height, width, tile_size, max_image_size)
    if grid.rows * grid.cols == 1:  # fits one tile: the image alone, as Idefics3
        return ImageViews(view_height, view_width)
    return ImageViews(view_height, view_width, grid.rows, grid.cols, grid)


MAX_TILED_SIDE = 4096
"""transformers' cap on either side of the resized image (``MAX_IMAGE_SIZE``: 4k resolution)."""


def tile_grid(height: int, width: int, tile_size: int, longest_edge: int) -> TileGrid:
    """The tile grid of a ``height x width`` image, exactly as transformers' ``Idefics3ImageProcessor`` cuts it.

    1. The longest side becomes ``longest_edge`` and the other keeps the aspect ratio (truncated, then raised to an
       even number; at least 1), both capped at :data:`MAX_TILED_SIDE`.
    2. The longest side is rounded up to a multiple of ``tile_size``; the other side is derived from it through the
       aspect ratio, truncated, and rounded up to a multiple of ``tile_size``.

    Args:
        height: Original height in pixels.
        width: Original width in pixels.
        tile_size: Side of a square tile (the vision encoder's resolution; transformers' ``max_image_size``).
        longest_edge: Target of the longest side (transformers' ``size["longest_edge"]``).

    Raises:
        ValueError: If a size is not positive.
    """
    for name, value in (("height", height), ("width", width), ("tile_size", tile_size), ("longest_edge", longest_edge)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    height, width = _rescale_longest_side(height, width, longest_edge)
    height, width = _cap_sides(height, width, MAX_TILED_SIDE)
    aspect_ratio = width / height
    if width >= height:
        width = math.ceil(width / tile_size) * tile_size
        height = math.ceil(int(width / aspect_ratio) / tile_size) * tile_size
    else:
        height = math.ceil(height / tile_size) * tile_size
        width = math.ceil(int(height * aspect_ratio) / tile_size) * tile_size
    return TileGrid(height, width, height // tile_size, width // tile_size)


def _rescale_longest_side(height: int, width: int, longest_edge: int) -> tuple[int, int]:
    """Longest side to ``longest_edge``, the other through the aspect ratio, truncated and raised to even."""
    aspect_ratio = width / height
    if width >= height:
        width = longest_edge
        height = int(width / aspect_ratio)
        height += height % 2
    else:
        height = longest_edge
        width = int(height * aspect_ratio)
        width += width % 2
    return max(height, 1), max(width, 1)


def _cap_sides(height: int, width: int, cap: int) -> tuple[int, int]:
    """Scale down so that no side exceeds ``cap`` (aspect ratio kept, truncated; at least 1)."""
    aspect_ratio = width / height
    if width >= height and width > cap:
        width, height = cap, int(cap / aspect_ratio)
    elif height > width and height > cap:
        height, width = cap, int(cap * aspect_ratio)
    return max(height, 1), max(width, 1)
