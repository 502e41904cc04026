"""The table of what images cost (:func:`~vlmkit.model.token_budget.token_budget`), from the command line.

    python -m vlmkit.data.token_budget --patch-size 14 --tokens-per-image 64 --sizes 384x384 980x740
    python -m vlmkit.data.token_budget --patch-size 16 --tile-size 512 --max-image-size 2048 --pixel-shuffle 4

Idefics2 (paper section 3.4): 64 visual tokens per image, 320 when split into 4 crops + the image. Idefics3 and
SmolVLM tile instead (:mod:`vlmkit.data.tiling`): ``rows x cols`` tiles chosen from the resolution + the image.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

from vlmkit.model.token_budget import TokenBudget, token_budget

__all__ = ["TokenBudget", "budget_table", "main", "token_budget"]


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
                split_images,
                tile_size,
                tokens_for_grid,
            )
            for split_images in (False, True)
        )
        ph, pw = one.processed_size
        cells = [f"{width}x{height}", f"{pw}x{ph}", f"{one.encoder_patches:,}", f"{one.visual_tokens:,}"]
        if tile_size:
            rows, cols = many.grid
            cells.append(f"{cols} x {rows} + 1" if rows else "1 (fits one tile)")
        cells += [f"{many.encoder_patches:,}", f"{many.visual_tokens:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """Print the token budget table (defaults: Idefics2 = SigLIP patch 14, 378..980 px, 64 tokens).

    ``vlmkit budget`` runs it (``prog`` names the command in its help).
    """
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
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
