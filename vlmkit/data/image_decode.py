"""Decode untrusted image bytes: any failure is a :class:`BadSample` with a reason, and memory stays bounded.

Opening an image reads only its header (size, format, EXIF orientation) and checks it; the pixels are decoded
later, only for images that survive truncation, at the reduced size the processor needs: a JPEG decodes at
1/2, 1/4 or 1/8 scale in the DCT (``Image.draft``), other formats are box-reduced (``Image.reduce``) right after
decoding, before any conversion. An image that would decode to more than ``max_pixels`` is skipped before
decoding (``too_many_pixels``). Every exception Pillow raises (a truncated stream, an EXIF block that is not
TIFF data, a decompression bomb) becomes ``corrupt_image`` (or ``too_many_pixels``) naming the sample.
"""

from __future__ import annotations

import io
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from vlmkit.data.formats import BadSample

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
"""Default per-source limit on decoded pixels (8000 x 8000; a JPEG counts at its reduced decoding size)."""

_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = (5, 6, 7, 8)
_JPEG_MAX_REDUCTION = 8


@contextmanager
def _quiet():
    """Pillow warns per bad file (corrupt EXIF, truncated reads, large images): the skip counters report them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextmanager
def _bad_image(where: str):
    """Turn whatever decoding raises into a :class:`BadSample` naming ``where``.

    ``too_many_pixels`` for Pillow's decompression-bomb guard, ``corrupt_image`` for anything else (Pillow raises many
    types on bad files).
    """
    try:
        yield
    except BadSample:
        raise
    except Image.DecompressionBombError as err:
        raise BadSample("too_many_pixels", f"{where}: {err}") from err
    except Exception as err:
        raise BadSample("corrupt_image", f"{where}: {type(err).__name__}: {err}") from err


def exif_orientation(image: Image.Image, header_only: bool = False) -> int:
    """The EXIF orientation (1..8) of ``image``; 1 when absent or not a number 1..8.

    Args:
        image: A PIL image.
        header_only: Read only what opening the file read: a PNG's EXIF chunk after its pixel data is then
            not seen (PNG's own ``getexif`` decodes the whole image to find it).

    Raises:
        Exception: Whatever Pillow raises on EXIF data it cannot parse (e.g. ``SyntaxError: not a TIFF file``).
    """
    exif = Image.Image.getexif(image) if header_only else image.getexif()
    value = exif.get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _too_many(where: str, width: int, height: int, pixels: int, max_pixels: int) -> BadSample:
    return BadSample(
        "too_many_pixels",
        f"{where}: {width}x{height} decodes to {pixels:,} pixels > max_image_pixels={max_pixels:,}",
    )


@dataclass(frozen=True)
class EncodedImage:
    """An image file whose header was read and checked; decoded on demand at the size that is needed.

    Attributes:
        data: The encoded bytes (as stored in the shard).
        width: Width as displayed (EXIF orientation applied).
        height: Height as displayed.
        orientation: EXIF orientation (1: as stored).
        format: Pillow's format name (``JPEG``, ``PNG``, ...).
        where: Names the sample and member, for messages.
    """

    data: bytes
    width: int
    height: int
    orientation: int
    format: str
    where: str

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` as displayed, as ``PIL.Image.size``."""
        return self.width, self.height

    @classmethod
    def open(
        cls, data: bytes, where: str, max_aspect_ratio: float = math.inf, max_pixels: int | None = None
    ) -> EncodedImage:
        """Read and check the header of ``data`` (no pixel is decoded).

        Args:
            data: Encoded image bytes.
            where: Names the sample and member in messages.
            max_aspect_ratio: Longest over shortest side allowed.
            max_pixels: Pixels allowed after the largest reduction the format decodes at (a JPEG can decode
                at 1/8 of each side); ``None``: no limit.

        Raises:
            BadSample: ``corrupt_image`` (not an image, or unreadable header or EXIF), ``too_many_pixels``
                (beyond ``max_pixels`` or Pillow's decompression-bomb limit) or ``extreme_aspect_ratio``.
        """
        try:
            with _quiet(), Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                format = image.format or ""
                if width < 1 or height < 1:
                    raise BadSample("corrupt_image", f"{where}: image is {width}x{height}")
                if max(width, height) > max_aspect_ratio * min(width, height):
                    raise BadSample("extreme_aspect_ratio", f"{where}: image is {width}x{height}")
                if max_pixels is not None:
                    reduction = _JPEG_MAX_REDUCTION if format == "JPEG" else 1
                    least = math.ceil(width / reduction) * math.ceil(height / reduction)
                    if least > max_pixels:
                        raise _too_many(where, width, height, least, max_pixels)
                orientation = exif_orientation(image, header_only=True)  # never decodes pixels
        except BadSample:
            raise
        except Image.DecompressionBombError as err:
            raise BadSample("too_many_pixels", f"{where}: {err}") from err
        except Exception as err:  # Pillow raises many types on bad bytes
            raise BadSample("corrupt_image", f"{where}: {type(err).__name__}: {err}") from err
        if orientation in _SWAPS_SIDES:
            width, height = height, width
        return cls(data, width, height, orientation, format, where)

    def decode(self, size: tuple[int, int] | None = None, max_pixels: int | None = None) -> Image.Image:
        """The image in RGB, oriented, decoded at a reduced size when ``size`` allows it.

        Args:
            size: ``(height, width)`` (as displayed) the caller will resize to; the result is at least that large
                wherever the original is. ``None``: full size.
            max_pixels: Pixels allowed at the size it decodes at; ``None``: no limit.

        Raises:
            BadSample: ``corrupt_image`` or ``too_many_pixels``, naming the sample.
        """
        with _bad_image(self.where), _quiet(), Image.open(io.BytesIO(self.data)) as image:
            return _decode(image, self.orientation, size, max_pixels, self.where, draft=True)


def image_size(image: Image.Image | EncodedImage) -> tuple[int, int]:
    """``(height, width)`` of ``image`` as displayed (EXIF orientation applied).

    Raises:
        Exception: Whatever Pillow raises on EXIF data it cannot parse.
    """
    if isinstance(image, EncodedImage):
        return image.height, image.width
    with _quiet():
        swap = exif_orientation(image) in _SWAPS_SIDES
    return (image.width, image.height) if swap else (image.height, image.width)


def decode_image(
    image: Image.Image | EncodedImage,
    size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
    where: str = "image",
) -> Image.Image:
    """``image`` decoded (if it is not yet), oriented and converted to RGB, at a reduced size when ``size`` allows.

    Args:
        image: An :class:`EncodedImage`, or a PIL image (decoded, or opened lazily from a file).
        size: ``(height, width)`` as displayed that the result will be resized to (``None``: full size).
        max_pixels: Pixels allowed at the size it decodes at; ``None``: no limit.
        where: Names the image in messages.

    Raises:
        BadSample: ``corrupt_image`` or ``too_many_pixels``, naming ``where``.
    """
    if isinstance(image, EncodedImage):
        return image.decode(size, max_pixels)
    with _bad_image(where), _quiet():
        image.load()  # a PNG's EXIF can follow its pixels
        return _decode(image, exif_orientation(image), size, max_pixels, where, draft=False)


def _decode(
    image: Image.Image,
    orientation: int,
    size: tuple[int, int] | None,
    max_pixels: int | None,
    where: str,
    draft: bool,
) -> Image.Image:
    """Decode (a JPEG at a reduced scale when ``draft``), reduce, orient and convert ``image`` (not changed itself).

    ``size`` is ``(height, width)`` as displayed. ``draft`` changes the size of a lazily opened image in place, so
    it is only used on images opened here.
    """
    stored = None
    if size is not None:  # the size needed, in the stored orientation, as (width, height)
        height, width = (max(1, s) for s in size)
        stored = (height, width) if orientation in _SWAPS_SIDES else (width, height)
        if draft and getattr(image, "tile", None):  # not decoded yet: a JPEG decodes at 1/2, 1/4 or 1/8 scale
            image.draft(None, stored)
    if max_pixels is not None and image.width * image.height > max_pixels:
        raise _too_many(where, image.width, image.height, image.width * image.height, max_pixels)
    image.load()
    if stored is not None:
        factor = min(image.width // stored[0], image.height // stored[1])
        if factor >= 2:  # a box filter: the later resize to `size` is antialiased, so quality is kept
            if image.mode.startswith("I;16"):  # reduced as 32-bit, kept 16-bit (its 0..65535 scale)
                image = image.convert("I").reduce(factor).convert("I;16")
            else:
                image = (image.convert(_reducible_mode(image)) if image.mode in _UNREDUCIBLE else image).reduce(factor)
    return rgb(orient(image, orientation))  # a new image: the input is left as it was (decoded)


def orient(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` turned and flipped as EXIF ``orientation`` (1..8) says it is displayed."""
    return image.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else image


_UNREDUCIBLE = ("1", "P", "PA")


def _reducible_mode(image: Image.Image) -> str:
    """The mode to convert to before ``Image.reduce`` (which rejects palette and 1-bit images)."""
    if image.mode == "1":
        return "L"
    return "RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB"


def rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB (16-bit and float scaled to 8 bits, transparency composited on white).

    EXIF orientation is not applied here (see :func:`decode_image`).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        sixteen = image.mode.startswith("I;16")
        array = np.array(image, dtype=np.float32)  # one copy, then in place (4 bytes a pixel)
        np.nan_to_num(array, copy=False, nan=0.0, posinf=65535.0, neginf=0.0)
        peak = 65535.0 if sixteen or (array.size and array.max() > 255) else 255.0
        array *= 255.0 / peak
        array += 0.5
        np.clip(array, 0, 255, out=array)
        image = Image.fromarray(array.astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")
