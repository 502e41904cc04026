"""Resolution-dependent tiling (Idefics3, SmolVLM): a grid of encoder-sized tiles chosen from the image's size.

The paper's image splitting cuts every image into 4 crops plus the whole image (section 3.4, Finding 6). Its
successors choose the grid from the resolution instead: the image's longest side is resized to ``longest_edge``
(Idefics3-8B: 1456 = 4 x 364; SmolVLM-256M/500M: 2048 = 4 x 512; small images are scaled up), both sides are then
rounded up to multiples of the tile size (the vision encoder's native resolution), and the result is cut into
``rows x cols`` tiles, followed by the whole image resized to one tile (the "global" view). An image that fits one
tile is given alone. :func:`~vlmkit.vision.sizing.tile_grid` is transformers' ``Idefics3ImageProcessor`` rule, integer
for integer (the token layout of a checkpoint's processor depends on it; it lives with the other sizing rules, which
the model's token budget uses too); here the pixels are cut, resampled once, from the original image.
"""

from __future__ import annotations

from PIL import Image

from vlmkit.vision.sizing import MAX_TILED_SIDE, TileGrid, tile_grid

__all__ = ["MAX_TILED_SIDE", "TileGrid", "tile_grid", "tile_views"]


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
