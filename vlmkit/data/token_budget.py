"""The table of what images cost (:func:`~vlmkit.model.token_budget.token_budget`), from the command line.

    python -m vlmkit.data.token_budget --patch-size 14 --tokens-per-image 64 --sizes 384x384 980x740

Idefics2 (paper section 3.4): 64 visual tokens per image, 320 when split into 4 crops + the image.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from vlmkit.model.token_budget import TokenBudget, token_budget

__all__ = ["TokenBudget", "budget_table", "main", "token_budget"]


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(height), int(width)


def budget_table(
    sizes: Sequence[tuple[int, int]],
    patch_size: int,
    tokens_for_patches: Callable[[int], int],
    max_image_size: int,
    min_image_size: int,
) -> str:
    """A markdown table of the cost of each ``(height, width)`` with and without splitting."""
    columns = ["image (WxH)", "processed (WxH)", "encoder patches", "visual tokens"]
    columns += ["split: encoder patches", "split: visual tokens"]
    lines = ["| " + " | ".join(columns) + " |", "|---|---|---:|---:|---:|---:|"]
    for height, width in sizes:
        one, five = (
            token_budget(height, width, patch_size, tokens_for_patches, max_image_size, min_image_size, split_images)
            for split_images in (False, True)
        )
        ph, pw = one.processed_size
        lines.append(
            f"| {width}x{height} | {pw}x{ph} | {one.encoder_patches:,} | {one.visual_tokens:,} | "
            f"{five.encoder_patches:,} | {five.visual_tokens:,} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the token budget table (defaults: Idefics2 = SigLIP patch 14, 378..980 px, 64 tokens)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch-size", type=int, default=14, help="vision encoder patch size (SigLIP: 14)")
    parser.add_argument(
        "--tokens-per-image", type=int, default=64, help="visual tokens per view; 0 = one per patch (MLP connector)"
    )
    parser.add_argument("--max-image-size", type=int, default=980, help="cap on the longest side")
    parser.add_argument("--min-image-size", type=int, default=378, help="target for the shortest side")
    parser.add_argument(
        "--sizes", nargs="+", default=["384x384", "640x480", "980x980", "1024x768", "1700x2200"], help="WxH sizes"
    )
    args = parser.parse_args(argv)
    tokens = args.tokens_per_image

    def per_view(patches: int) -> int:
        return tokens if tokens > 0 else patches

    sizes = [_size(s) for s in args.sizes]
    print(budget_table(sizes, args.patch_size, per_view, args.max_image_size, args.min_image_size))


if __name__ == "__main__":
    main()
