"""What an image costs a model: encoder patches and visual tokens, with and without image splitting.

Idefics2 (paper section 3.4): 64 visual tokens per image, 320 when split into 4 crops + the image. The table for
any sizes is ``python -m vlmkit.data.token_budget``; :meth:`VisionLanguageModel.token_budget` gives it for a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vlmkit.deprecation import renamed_argument
from vlmkit.vision.sizing import target_size


@dataclass(frozen=True)
class TokenBudget:
    """The cost of one image.

    Attributes:
        processed_size: ``(height, width)`` after aspect-preserving resizing.
        views: Images given to the encoder: 1, or 5 when split.
        encoder_patches: Patches the vision encoder processes over all views.
        visual_tokens: Placeholder tokens the image takes in the LM's sequence.
    """

    processed_size: tuple[int, int]
    views: int
    encoder_patches: int
    visual_tokens: int


def token_budget(
    height: int,
    width: int,
    patch_size: int,
    tokens_for_patches: Callable[[int], int],
    max_image_size: int = 980,
    min_image_size: int = 378,
    split_images: bool = False,
    *,
    split: bool | None = None,
) -> TokenBudget:
    """Encoder patches and visual tokens of a ``height x width`` image.

    Args:
        height: Original image height in pixels.
        width: Original image width in pixels.
        patch_size: The encoder's patch size.
        tokens_for_patches: Visual tokens for one view of ``p`` patches (e.g. ``lambda p: 64`` for a
            64-latent perceiver, ``lambda p: p`` for an MLP projection).
        max_image_size: Processor cap on the longest side.
        min_image_size: Processor target for the shortest side.
        split_images: Split into 4 crops + the whole image, each at the processed size.
        split: Deprecated name of ``split_images``.
    """
    split_images = renamed_argument("token_budget", "split", split, "split_images", split_images, False)
    processed = target_size(height, width, patch_size, max_image_size, min_image_size)
    patches = (processed[0] // patch_size) * (processed[1] // patch_size)
    views = 5 if split_images else 1
    return TokenBudget(processed, views, views * patches, views * tokens_for_patches(patches))
