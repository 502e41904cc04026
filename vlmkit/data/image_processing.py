"""Aspect-ratio preserving image processing (Idefics2 paper, Finding 5, section 3.4).

Images keep their aspect ratio: the longest side is capped at ``max_image_size``,
the shortest is raised towards ``min_image_size``, and both sides are rounded to
a multiple of the encoder's patch size. ``resize_mode="square"`` instead resizes every
image to ``max_image_size`` x ``max_image_size`` (the paper's Table 5 baseline). Any PIL mode
(grayscale, RGBA, palette, CMYK, 16-bit) and EXIF orientation become a plain RGB tensor. Image files
are decoded at the reduced size the output needs (see :mod:`vlmkit.data.image_decode`).
With ``tile_size`` images are processed as Idefics3 does instead (:mod:`vlmkit.data.tiling`). The sizes and
splits themselves are rules of :mod:`vlmkit.vision.sizing`, which the model's token budget uses too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image

from vlmkit.checks import check_fraction, check_image_sizes
from vlmkit.data.formats import BadSample
from vlmkit.data.image_decode import EncodedImage, decode_image, exif_orientation, image_size, orient, rgb
from vlmkit.data.tiling import tile_views
from vlmkit.deprecation import renamed_argument
from vlmkit.vision.sizing import ImageViews, plan_views, target_size

__all__ = [
    "ImageInput",
    "ImageProcessor",
    "ImageViews",
    "encoded",
    "load_image",
    "split_image",
    "target_size",
    "to_rgb",
]

ImageInput = Image.Image | EncodedImage | str | PathLike
"""A PIL image, an :class:`~vlmkit.data.image_decode.EncodedImage`, or the path of an image file."""

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
    except Exception as err:  # Pillow raises many types on bad files
        raise ValueError(f"cannot read image {image}: {type(err).__name__}: {err}") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to RGB, applying EXIF orientation and compositing alpha on white.

    Raises:
        ValueError: If the image cannot be decoded or its EXIF data cannot be parsed.
    """
    try:
        orientation = exif_orientation(image)
        image.load()
        return rgb(orient(image, orientation))
    except Exception as err:
        raise ValueError(f"cannot read image: {type(err).__name__}: {err}") from err


def encoded(image: ImageInput) -> Image.Image | EncodedImage:
    """A path read as an :class:`EncodedImage` (decoded later, at the size needed); images as they are."""
    if isinstance(image, Image.Image | EncodedImage):
        return image
    try:
        data = Path(image).read_bytes()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"image file not found: {image}") from err
    except OSError as err:
        raise ValueError(f"cannot read image {image}: {err}") from err
    try:
        return EncodedImage.open(data, str(image))
    except BadSample as bad:
        raise ValueError(f"cannot read image {image}: {bad.detail}") from bad


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
        tile_size: Process images as Idefics3/SmolVLM do (:mod:`vlmkit.data.tiling`): a split image becomes a
            resolution-dependent grid of ``tile_size`` tiles (its longest side resized to ``max_image_size``, both
            sides rounded up to multiples of ``tile_size``) followed by the whole image, and an image that fits one
            tile or is not split is squashed to ``tile_size x tile_size`` (aspect ratio not kept, as there).
            ``min_image_size`` and upscaling do not apply. ``None``: the paper's 4 crops + the image.

    Raises:
        ValueError: If a size or probability is out of range, ``tile_size`` is not a multiple of ``patch_size``, or
            upscaling is asked for with ``tile_size`` (tiling resizes every image to ``max_image_size``).
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
        tile_size: int | None = None,
        resize_mode: ResizeMode = "preserve_aspect",
    ) -> None:
        if patch_size <= 0:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        if tile_size is None:  # tiling does not use min_image_size
            check_image_sizes(min_image_size, max_image_size)
        check_fraction("upscale_probability", upscale_probability)
        if max_upscale < 1.0:
            raise ValueError(f"max_upscale must be >= 1, got {max_upscale}")
        if tile_size is not None:
            if tile_size <= 0 or tile_size % patch_size:
                raise ValueError(f"tile_size={tile_size} must be a positive multiple of patch_size={patch_size}")
            if upscale_probability > 0:
                raise ValueError(
                    f"upscale_probability={upscale_probability} with tile_size={tile_size}: tiling resizes every "
                    "image to max_image_size, so upscaling would change nothing; set it to 0"
                )
        self.tile_size = tile_size
        if resize_mode not in get_args(ResizeMode):
            raise ValueError(f"resize_mode must be one of {get_args(ResizeMode)}, got {resize_mode!r}")
        if resize_mode == "square" and tile_size is not None:
            raise ValueError("resize_mode='square' with tile_size: tiling already resizes every view to a square tile")
        self.patch_size = patch_size
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.max_image_size = max_image_size
        self.min_image_size = min_image_size
        self.upscale_probability = upscale_probability
        self.max_upscale = max_upscale
        self.resize_mode = resize_mode

    def output_size(self, height: int, width: int, scale: float = 1.0) -> tuple[int, int]:
        """The processed ``(height, width)`` of a ``height x width`` image (after an optional upscale).

        With ``tile_size``: one tile, the size of every view.
        """
        views = self.plan(height, width, scale=scale)
        return views.height, views.width

    def plan(self, height: int, width: int, split_images: bool = False, scale: float = 1.0) -> ImageViews:
        """The views a ``height x width`` image gives (sizes from its header: nothing is decoded).

        Args:
            height: Original height.
            width: Original width.
            split_images: Split into crops + the whole image: the 4 quadrants, or with ``tile_size`` the tile grid.
            scale: Upscaling factor drawn for this image (:meth:`draw_scale`).
        """
        return plan_views(
            height,
            width,
            self.patch_size,
            self.max_image_size,
            self.min_image_size,
            split_images,
            scale,
            self.tile_size,
            square=self.resize_mode == "square",
        )

    def __call__(self, image: ImageInput, rng: random.Random | None = None) -> torch.Tensor:
        """Process one image (or image file) to ``[3, H, W]`` float32; ``rng`` enables random upscaling."""
        return self.process(image, split_images=False, rng=rng)[0]

    def draw_scale(self, rng: random.Random | None) -> float:
        """The random upscaling factor of the next training image (1 without ``rng``)."""
        if rng is not None and self.upscale_probability > 0 and rng.random() < self.upscale_probability:
            return rng.uniform(1.0, self.max_upscale)
        return 1.0

    @staticmethod
    def decode_size(views: ImageViews) -> tuple[int, int]:
        """The size an image must be decoded at for ``views`` (crops of a split: the grid of them)."""
        if views.tiles is not None:
            return views.tiles.height, views.tiles.width
        return max(views.rows, 1) * views.height, max(views.cols, 1) * views.width

    def process(
        self,
        image: ImageInput,
        split_images: bool = False,
        rng: random.Random | None = None,
        *,
        split: bool | None = None,
    ) -> list[torch.Tensor]:
        """Process one image, optionally split into crops + the original (paper section 3.4, Finding 6).

        Args:
            image: A PIL image, an ``EncodedImage`` or an image file path (decoded at the size needed).
            split_images: Return the crops (row-major) followed by the whole image: the four quadrants, each resized
                to the whole image's processed size, as the paper describes; with ``tile_size`` the tile grid.
            rng: Random source for training-time upscaling; ``None`` disables it.
            split: Deprecated name of ``split_images``.

        Returns:
            One ``[3, H, W]`` tensor, or ``rows * cols + 1`` of the same size when split.

        Raises:
            FileNotFoundError: If a file does not exist (the message names it).
            ValueError: If the image cannot be decoded or oriented (the message names the file).
        """
        split_images = renamed_argument("ImageProcessor.process", "split", split, "split_images", split_images, False)
        return self.process_views(image, split_images, rng)[1]

    def process_views(
        self, image: ImageInput, split_images: bool = False, rng: random.Random | None = None
    ) -> tuple[ImageViews, list[torch.Tensor]]:
        """:meth:`process`, also returning the :class:`ImageViews` (how the image was split)."""
        image = encoded(image)
        name = image.where if isinstance(image, EncodedImage) else "image"
        try:
            size = image_size(image)
        except Exception as err:  # EXIF data Pillow cannot parse
            raise ValueError(f"cannot read image {name}: {type(err).__name__}: {err}") from err
        views = self.plan(*size, split_images, self.draw_scale(rng))
        try:
            decoded = decode_image(image, self.decode_size(views), where=name)
        except BadSample as bad:
            raise ValueError(f"cannot read image {name}: {bad.detail}") from bad
        return views, self.views(decoded, views)

    def views(self, image: Image.Image, views: ImageViews) -> list[torch.Tensor]:
        """Tensors ``[3, views.height, views.width]`` of an RGB image: itself, or its crops then itself."""
        if views.tiles is not None:
            crops = tile_views(image, views.tiles, views.height, Image.Resampling.BICUBIC)
        elif views.rows:
            crops = split_image(image, views.rows, views.cols) + [image]
        else:
            crops = [image]
        return [self._to_tensor(view, views.height, views.width) for view in crops]

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
