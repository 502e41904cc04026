"""Aspect-ratio preserving image processing (Idefics2 paper, Finding 5, section 3.4).

Images keep their aspect ratio: the longest side is capped at ``max_image_size``,
the shortest is raised towards ``min_image_size``, and both sides are rounded to
a multiple of the encoder's patch size. ``resize_mode="square"`` instead resizes every
image to ``max_image_size`` x ``max_image_size`` (the paper's Table 5 baseline). Any PIL mode
(grayscale, RGBA, palette, CMYK, 16-bit) and EXIF orientation become a plain RGB tensor.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from os import PathLike
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Image.Image | str | PathLike
"""A PIL image, or the path of an image file."""

ResizeMode = Literal["preserve_aspect", "square"]
"""``preserve_aspect``: keep each image's aspect ratio and (bounded) resolution (Idefics2); ``square``: resize
every image to ``max_image_size`` x ``max_image_size``, as encoders pretrained on fixed-size squares expect."""


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
    """PIL image -> normalised ``[3, H, W]`` tensor, aspect ratio preserved; optional splitting and upscaling.

    Args:
        patch_size: The encoder's patch size; output sides are multiples of it.
        image_mean: Per-channel mean of the encoder's pretraining.
        image_std: Per-channel std of the encoder's pretraining.
        max_image_size: Cap on the longest side (Idefics2: 980; 384 in pretraining stage 1).
        min_image_size: Target for the shortest side (Idefics2: 378).
        upscale_probability: Chance that a training image is first scaled up by a random factor in
            ``[1, max_upscale]`` (paper sections 4.1-4.2: "we randomly scale up images"); needs an ``rng``
            at call time, so evaluation (no ``rng``) is never augmented.
        max_upscale: Largest random upscaling factor (the ``max_image_size`` cap still applies).
        resize_mode: ``"preserve_aspect"`` (default) or ``"square"``: every image (and every crop of a split
            image) becomes ``max_image_size`` x ``max_image_size`` (rounded down to the patch size), whatever its
            aspect ratio (paper Table 5, "Square images"); random upscaling then changes nothing.
    """

    def __init__(
        self,
        patch_size: int,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        max_image_size: int = 980,
        min_image_size: int = 378,
        upscale_probability: float = 0.0,
        max_upscale: float = 2.0,
        resize_mode: ResizeMode = "preserve_aspect",
    ) -> None:
        if patch_size <= 0:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        if min_image_size > max_image_size:
            raise ValueError(f"min_image_size={min_image_size} exceeds max_image_size={max_image_size}")
        if not 0.0 <= upscale_probability <= 1.0:
            raise ValueError(f"upscale_probability must be in [0, 1], got {upscale_probability}")
        if max_upscale < 1.0:
            raise ValueError(f"max_upscale must be >= 1, got {max_upscale}")
        if resize_mode not in get_args(ResizeMode):
            raise ValueError(f"resize_mode must be one of {get_args(ResizeMode)}, got {resize_mode!r}")
        self.patch_size = patch_size
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.max_image_size = max_image_size
        self.min_image_size = min_image_size
        self.upscale_probability = upscale_probability
        self.max_upscale = max_upscale
        self.resize_mode = resize_mode

    def output_size(self, height: int, width: int, scale: float = 1.0) -> tuple[int, int]:
        """The processed ``(height, width)`` of a ``height x width`` image (after an optional upscale)."""
        if self.resize_mode == "square":
            side = max(self.patch_size, self.max_image_size // self.patch_size * self.patch_size)
            return side, side
        return target_size(
            round(height * scale), round(width * scale), self.patch_size, self.max_image_size, self.min_image_size
        )

    def __call__(self, image: ImageInput, rng: random.Random | None = None) -> torch.Tensor:
        """Process one image (or image file) to ``[3, H, W]`` float32; ``rng`` enables random upscaling."""
        return self.process(image, split=False, rng=rng)[0]

    def process(self, image: ImageInput, split: bool = False, rng: random.Random | None = None) -> list[torch.Tensor]:
        """Process one image, optionally split into 4 crops + the original (paper section 3.4, Finding 6).

        Args:
            image: A PIL image or an image file path.
            split: Return the four quadrant crops (row-major) followed by the whole image, every crop
                resized to the whole image's processed size, as the paper describes.
            rng: Random source for training-time upscaling; ``None`` disables it.

        Returns:
            One ``[3, H, W]`` tensor, or five of the same size when ``split``.
        """
        image = to_rgb(load_image(image))
        scale = 1.0
        if rng is not None and self.upscale_probability > 0 and rng.random() < self.upscale_probability:
            scale = rng.uniform(1.0, self.max_upscale)
        height, width = self.output_size(image.height, image.width, scale)
        views = split_image(image) + [image] if split else [image]
        return [self._to_tensor(view, height, width) for view in views]

    def _to_tensor(self, image: Image.Image, height: int, width: int) -> torch.Tensor:
        if (height, width) != (image.height, image.width):
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0  # [3, H, W]
        return (pixels - self.mean) / self.std


def split_image(image: Image.Image, rows: int = 2, cols: int = 2) -> list[Image.Image]:
    """Cut ``image`` into ``rows x cols`` equal crops, row-major (the last row/column absorbs remainders)."""
    xs = [round(i * image.width / cols) for i in range(cols + 1)]
    ys = [round(i * image.height / rows) for i in range(rows + 1)]
    crops = []
    for r in range(rows):
        for c in range(cols):
            box = (xs[c], ys[r], max(xs[c + 1], xs[c] + 1), max(ys[r + 1], ys[r] + 1))
            crops.append(image.crop(box))
    return crops
