"""Resolution-dependent tiling (Idefics3, SmolVLM): a grid of encoder-sized tiles chosen from the image's size.

The paper's image splitting cuts every image into 4 crops plus the whole image (section 3.4, Finding 6). Its
successors choose the grid from the resolution instead: the image's longest side is resized to ``longest_edge``
(Idefics3-8B: 1456 = 4 x 364; SmolVLM-256M/500M: 2048 = 4 x 512; small images are scaled up), both sides are then
rounded up to multiples of the tile size (the vision encoder's native resolution), and the result is cut into
``rows x cols`` tiles, followed by the whole image resized to one tile (the "global" view). An image that fits one
tile is given alone. :func:`tile_grid` is transformers' ``Idefics3ImageProcessor`` rule, integer for integer (the
token layout of a checkpoint's processor depends on it); the pixels are resampled once, from the original image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

__all__ = ["MAX_TILED_SIDE", "TileGrid", "tile_grid", "tile_views"]

MAX_TILED_SIDE = 4096
"""transformers' cap on either side of the resized image (``MAX_IMAGE_SIZE``: 4k resolution)."""


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


def tile_views(image: Image.Image, grid: TileGrid, tile_size: int, resample: Image.Resampling) -> list[Image.Image]:
    """The ``rows x cols`` tiles (row-major) then the whole image, every view ``tile_size`` square.

    The image is resized once to the grid's size and cut; the global view is resized from ``image`` itself.
    """
    if (image.height, image.width) != (grid.height, grid.width):
        resized = image.resize((grid.width, grid.height), resample)
    else:
        resized = image
    tiles = [
        resized.crop((c * tile_size, r * tile_size, (c + 1) * tile_size, (r + 1) * tile_size))
        for r in range(grid.rows)
        for c in range(grid.cols)
    ]
    whole = image if image.size == (tile_size, tile_size) else image.resize((tile_size, tile_size), resample)
    return [*tiles, whole]


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
