"""What an image costs: encoder patches and visual tokens, with and without image splitting or tiling.

    python -m vlmkit.data.token_budget --patch-size 14 --tokens-per-image 64 --sizes 384x384 980x740
    python -m vlmkit.data.token_budget --patch-size 16 --tile-size 512 --max-image-size 2048 --pixel-shuffle 4

Idefics2 (paper section 3.4): 64 visual tokens per image, 320 when split into 4 crops + the image. Idefics3 and
SmolVLM tile instead (:mod:`vlmkit.data.tiling`): ``rows x cols`` tiles chosen from the resolution + the image.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vlmkit.data.image_processing import ImageProcessor


@dataclass(frozen=True)
class TokenBudget:
    """The cost of one image.

    Attributes:
        processed_size: ``(height, width)`` of each view (after aspect-preserving resizing; a tile with tiling).
        views: Images given to the encoder: 1, or the crops + 1 when split (5; with tiling ``rows * cols + 1``).
        encoder_patches: Patches the vision encoder processes over all views.
        visual_tokens: Placeholder tokens the image takes in the LM's sequence.
        grid: ``(rows, cols)`` of the crops of a split image; ``(0, 0)``: not split.
    """

    processed_size: tuple[int, int]
    views: int
    encoder_patches: int
    visual_tokens: int
    grid: tuple[int, int] = (0, 0)


def token_budget(
    height: int,
    width: int,
    patch_size: int,
    tokens_for_patches: Callable[[int], int] | None = None,
    max_image_size: int = 980,
    min_image_size: int = 378,
    split: bool = False,
    tile_size: int | None = None,
    tokens_for_grid: Callable[[int, int], int] | None = None,
) -> TokenBudget:
    """Encoder patches and visual tokens of a ``height x width`` image, as the image processor splits it.

    Args:
        height: Original image height in pixels.
        width: Original image width in pixels.
        patch_size: The encoder's patch size.
        tokens_for_patches: Visual tokens for one view of ``p`` patches (e.g. ``lambda p: 64`` for a
            64-latent perceiver, ``lambda p: p`` for an MLP projection).
        max_image_size: Processor cap on the longest side (with ``tile_size``: the longest side images are resized
            to before tiling).
        min_image_size: Processor target for the shortest side.
        split: Split into crops + the whole image: 4 + 1 views at the processed size, or with ``tile_size`` the
            tile grid + 1.
        tile_size: Tile images as Idefics3 does (see :class:`~vlmkit.data.ImageProcessor`).
        tokens_for_grid: Instead of ``tokens_for_patches``: visual tokens for one view of ``rows x cols`` patches
            (connectors whose count depends on the grid's shape, e.g. pixel shuffle).

    Raises:
        ValueError: Unless exactly one of ``tokens_for_patches`` and ``tokens_for_grid`` is given.
    """
    if (tokens_for_patches is None) == (tokens_for_grid is None):
        raise ValueError("give exactly one of tokens_for_patches or tokens_for_grid")
    if tokens_for_grid is None:

        def tokens_for_grid(rows: int, cols: int) -> int:
            return tokens_for_patches(rows * cols)

    processor = ImageProcessor(patch_size, max_image_size=max_image_size, min_image_size=min_image_size,
                               tile_size=tile_size)  # fmt: skip
    plan = processor.plan(height, width, split)
    rows, cols = plan.height // patch_size, plan.width // patch_size
    return TokenBudget(
        (plan.height, plan.width),
        plan.count,
        plan.count * rows * cols,
        plan.count * tokens_for_grid(rows, cols),
        (plan.rows, plan.cols),
    )


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(height), int(width)


def budget_table(
    sizes: Sequence[tuple[int, int]],
    patch_size: int,
    tokens_for_patches: Callable[[int], int] | None,
    max_image_size: int,
    min_image_size: int,
    tile_size: int | None = None,
    tokens_for_grid: Callable[[int, int], int] | None = None,
) -> str:
    """A markdown table of the cost of each ``(height, width)`` with and without splitting (or tiling)."""
    split_name = "tiled" if tile_size else "split"
    columns = ["image (WxH)", "processed (WxH)", "encoder patches", "visual tokens"]
    if tile_size:
        columns.append("tiles (cols x rows + 1)")
    columns += [f"{split_name}: encoder patches", f"{split_name}: visual tokens"]
    lines = ["| " + " | ".join(columns) + " |", "|---|---|" + "---:|" * (len(columns) - 2)]
    for height, width in sizes:
        one, many = (
            token_budget(
                height,
                width,
                patch_size,
                tokens_for_patches,
                max_image_size,
                min_image_size,
                split,
                tile_size,
                tokens_for_grid,
            )
            for split in (False, True)
        )
        ph, pw = one.processed_size
        cells = [f"{width}x{height}", f"{pw}x{ph}", f"{one.encoder_patches:,}", f"{one.visual_tokens:,}"]
        if tile_size:
            rows, cols = many.grid
            cells.append(f"{cols} x {rows} + 1" if rows else "1 (fits one tile)")
        cells += [f"{many.encoder_patches:,}", f"{many.visual_tokens:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the token budget table (defaults: Idefics2 = SigLIP patch 14, 378..980 px, 64 tokens)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch-size", type=int, default=14, help="vision encoder patch size (SigLIP: 14)")
    parser.add_argument(
        "--tokens-per-image", type=int, default=64, help="visual tokens per view; 0 = one per patch (MLP connector)"
    )
    parser.add_argument(
        "--pixel-shuffle",
        type=int,
        default=None,
        help="pixel-shuffle factor r instead: ceil(rows / r) * ceil(cols / r) tokens per view (SmolVLM-256M: 4)",
    )
    parser.add_argument("--max-image-size", type=int, default=980, help="cap on the longest side (tiling: its target)")
    parser.add_argument("--min-image-size", type=int, default=378, help="target for the shortest side")
    parser.add_argument("--tile-size", type=int, default=None, help="tile like Idefics3 (SmolVLM-256M: 512)")
    parser.add_argument(
        "--sizes", nargs="+", default=["384x384", "640x480", "980x980", "1024x768", "1700x2200"], help="WxH sizes"
    )
    args = parser.parse_args(argv)
    tokens, shuffle = args.tokens_per_image, args.pixel_shuffle

    def per_view(rows: int, cols: int) -> int:
        if shuffle:
            return math.ceil(rows / shuffle) * math.ceil(cols / shuffle)
        return tokens if tokens > 0 else rows * cols

    sizes = [_size(s) for s in args.sizes]
    table = budget_table(
        sizes, args.patch_size, None, args.max_image_size, args.min_image_size, args.tile_size, tokens_for_grid=per_view
    )
    print(table)


if __name__ == "__main__":
    main()
