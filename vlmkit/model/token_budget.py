"""What an image costs a model: encoder patches and visual tokens, with and without image splitting or tiling.

Idefics2 (paper section 3.4): 64 visual tokens per image, 320 when split into 4 crops + the image. Idefics3 and
SmolVLM tile instead: ``rows x cols`` tiles chosen from the resolution + the image. The sizes come from the same rules
the data pipeline uses (:func:`~vlmkit.vision.sizing.plan_views`). The table for any sizes is
``python -m vlmkit.data.token_budget``; :meth:`VisionLanguageModel.token_budget` gives it for a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vlmkit.deprecation import renamed_argument
from vlmkit.vision.sizing import plan_views

__all__ = ["TokenBudget", "token_budget"]


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
    split_images: bool = False,
    tile_size: int | None = None,
    tokens_for_grid: Callable[[int, int], int] | None = None,
    *,
    split: bool | None = None,
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
        split_images: Split into crops + the whole image: 4 + 1 views at the processed size, or with ``tile_size``
            the tile grid + 1.
        tile_size: Tile images as Idefics3 does (:func:`~vlmkit.vision.sizing.tile_grid`).
        tokens_for_grid: Instead of ``tokens_for_patches``: visual tokens for one view of ``rows x cols`` patches
            (connectors whose count depends on the grid's shape, e.g. pixel shuffle).
        split: Deprecated name of ``split_images``.

    Raises:
        ValueError: Unless exactly one of ``tokens_for_patches`` and ``tokens_for_grid`` is given.
    """
    split_images = renamed_argument("token_budget", "split", split, "split_images", split_images, False)
    if (tokens_for_patches is None) == (tokens_for_grid is None):
        raise ValueError("give exactly one of tokens_for_patches or tokens_for_grid")
    if tokens_for_grid is None:

        def tokens_for_grid(rows: int, cols: int) -> int:
            return tokens_for_patches(rows * cols)

    plan = plan_views(height, width, patch_size, max_image_size, min_image_size, split_images, tile_size=tile_size)
    rows, cols = plan.height // patch_size, plan.width // patch_size
    return TokenBudget(
        (plan.height, plan.width),
        plan.count,
        plan.count * rows * cols,
        plan.count * tokens_for_grid(rows, cols),
        (plan.rows, plan.cols),
    )
