"""Idefics3's tile grid, integer for integer, against transformers' own image processors."""

import random

import pytest
import torch
from PIL import Image
from transformers import Idefics3ImageProcessor
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

from vlmkit.data.image_processing import ImageProcessor, ImageViews
from vlmkit.data.tiling import TileGrid, tile_grid

TILE, LONGEST = 16, 40  # 40 is no multiple of 16: the longest side is rounded up to 48, 3 tiles


def _sizes(count: int, seed: int) -> list[tuple[int, int]]:
    """(height, width) pairs: random aspects, plus squares, tile multiples, 1-pixel sides and extreme strips."""
    rng = random.Random(seed)
    edge = [(16, 16), (40, 40), (32, 16), (16, 48), (1, 1), (1, 57), (57, 1), (39, 40), (40, 39), (15, 17), (200, 3)]
    return edge + [(rng.randint(1, 90), rng.randint(1, 90)) for _ in range(count)]


@pytest.mark.parametrize("backend", [Idefics3ImageProcessor, Idefics3ImageProcessorPil], ids=["torchvision", "pil"])
def test_grid_equals_transformers_processor(backend):
    sizes = _sizes(60, seed=hash(backend.__name__) % 1000)
    processor = backend(size={"longest_edge": LONGEST}, max_image_size={"longest_edge": TILE})
    images = [[Image.new("RGB", (w, h))] for h, w in sizes]
    out = processor(images, return_row_col_info=True, return_tensors="pt")
    for (h, w), rows, cols, frames in zip(sizes, out["rows"], out["cols"], out["pixel_attention_mask"]):
        grid = tile_grid(h, w, TILE, LONGEST)
        theirs = (rows[0], cols[0])
        ours = (grid.rows, grid.cols) if grid.rows * grid.cols > 1 else (0, 0)  # one tile: the image alone
        assert ours == theirs, (h, w)
        views = ImageProcessor(8, max_image_size=LONGEST, min_image_size=8, tile_size=TILE).plan(
            h, w, split_images=True
        )
        assert views.count == int(frames.flatten(1).any(1).sum()), (h, w)  # real frames of the sample


def test_rule_by_hand():
    # 37 x 11 (w x h): longest 37 -> 40, height int(40 / (37 / 11)) = 11 -> 12 (even); width 40 -> 48,
    # height int(48 / (40 / 12)) = 14 -> 16: one row of three tiles
    assert tile_grid(11, 37, 16, 40) == TileGrid(16, 48, 1, 3)
    assert tile_grid(512 * 3, 512 * 4, 512, 2048) == TileGrid(1536, 2048, 3, 4)  # SmolVLM: 4:3 -> 4 x 3 tiles
    assert tile_grid(384, 512, 512, 2048) == TileGrid(1536, 2048, 3, 4)  # small images are scaled up first
    assert tile_grid(5000, 20000, 512, 2048).cols == 4
    with pytest.raises(ValueError, match="tile_size must be positive"):
        tile_grid(10, 10, 0, 40)


def test_tiled_views_are_tiles_of_the_resized_image_then_the_global_view():
    processor = ImageProcessor(8, image_mean=(0, 0, 0), image_std=(1, 1, 1), max_image_size=32, tile_size=16)
    image = Image.fromarray(torch.randint(0, 256, (16, 32, 3), dtype=torch.uint8).numpy())  # needs no resizing
    views, tensors = processor.process_views(image, split_images=True)
    assert views == ImageViews(16, 16, 1, 2, TileGrid(16, 32, 1, 2))
    pixels = torch.from_numpy(torch.tensor(list(image.getdata()), dtype=torch.float32).numpy()) / 255
    pixels = pixels.reshape(16, 32, 3).permute(2, 0, 1)
    assert len(tensors) == 3 and all(t.shape == (3, 16, 16) for t in tensors)
    torch.testing.assert_close(tensors[0], pixels[:, :, :16])
    torch.testing.assert_close(tensors[1], pixels[:, :, 16:])
    unsplit_views, [unsplit] = processor.process_views(image, split_images=False)  # not split: squashed to one tile
    assert unsplit_views == ImageViews(16, 16) and unsplit.shape == (3, 16, 16)
    torch.testing.assert_close(tensors[2], unsplit)
    assert processor.plan(20, 10, split_images=True) == ImageViews(16, 16, 2, 1, TileGrid(32, 16, 2, 1))
    assert processor.plan(10, 10, split_images=True, scale=1.0).count == 5  # scaled up to 32 x 32 first: 2 x 2 + 1
    assert ImageProcessor(8, max_image_size=16, tile_size=16).plan(5, 9, split_images=True) == ImageViews(16, 16)


def test_tiles_equal_transformers_pixels_when_nothing_is_resized():
    """Rescale and normalisation agree; a 48 x 16 image at longest edge 48 is cut, not resized (the global view is)."""
    image = Image.fromarray(torch.randint(0, 256, (16, 48, 3), dtype=torch.uint8).numpy())
    theirs = Idefics3ImageProcessor(size={"longest_edge": 48}, max_image_size={"longest_edge": 16})(
        image, return_tensors="pt"
    )["pixel_values"][0]
    ours = ImageProcessor(8, max_image_size=48, tile_size=16).process(image, split_images=True)
    assert len(ours) == theirs.shape[0] == 4
    for tile in range(3):
        torch.testing.assert_close(ours[tile], theirs[tile], atol=1e-5, rtol=0)
    assert (ours[3] - theirs[3]).abs().mean() < 0.1  # bicubic vs transformers' resampling of the global view


def test_tiling_refuses_what_it_cannot_honour():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ImageProcessor(8, tile_size=20)
    with pytest.raises(ValueError, match="upscale_probability"):
        ImageProcessor(8, tile_size=16, upscale_probability=0.5)
