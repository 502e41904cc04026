"""Aspect-ratio preserving image processing (Idefics2 paper, Finding 5, section 3.4).

Images keep their aspect ratio: the longest side is capped at ``max_image_size``,
the shortest is raised towards ``min_image_size``, and both sides are rounded to
a multiple of the encoder's patch size. Any PIL mode (grayscale, RGBA, palette,
CMYK, 16-bit) and EXIF orientation become a plain RGB tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Image.Image | str | PathLike
"""A PIL image, or the path of an image file."""


def load_image(image: ImageInput) -> Image.Image:
    """Return ``image`` itself, or open and fully decode the file it names.

    Raises:
        FileNotFoundError: If the file does not exist (the message names it).
        ValueError: If the file cannot be decoded as an image (the message names it).
    """
    if isinstance(image, Image.Image):
        return image
    try:
        with Image.open(image) as opened:
            opened.load()  # decode now, so truncated files fail here and not later
            return opened.copy()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"image file not found: {image}") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {image}: {err}") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to RGB, applying EXIF orientation and compositing alpha on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


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


class ImageProcessor:
    """PIL image -> normalised ``[3, H, W]`` tensor, aspect ratio preserved.

    Args:
        patch_size: The encoder's patch size; output sides are multiples of it.
        image_mean: Per-channel mean of the encoder's pretraining.
        image_std: Per-channel std of the encoder's pretraining.
        max_image_size: Cap on the longest side (Idefics2: 980; 384 in pretraining stage 1).
        min_image_size: Target for the shortest side (Idefics2: 378).
    """

    def __init__(
        self,
        patch_size: int,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        max_image_size: int = 980,
        min_image_size: int = 378,
    ) -> None:
        if patch_size <= 0:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        if min_image_size > max_image_size:
            raise ValueError(f"min_image_size={min_image_size} exceeds max_image_size={max_image_size}")
        self.patch_size = patch_size
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.max_image_size = max_image_size
        self.min_image_size = min_image_size

    def __call__(self, image: ImageInput) -> torch.Tensor:
        """Process one image (or image file) to ``[3, H, W]`` float32."""
        image = to_rgb(load_image(image))
        height, width = target_size(
            image.height, image.width, self.patch_size, self.max_image_size, self.min_image_size
        )
        if (height, width) != (image.height, image.width):
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0  # [3, H, W]
        return (pixels - self.mean) / self.std
