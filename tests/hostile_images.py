"""Hostile image bytes for fuzzing the decode path: valid files of every kind, and seeded random mutations of them.

Used by ``tests/data/test_image_fuzz.py`` (a few hundred mutations) and ``benchmarks/fuzz_images.py``
(thousands, through the real shard pipeline). Everything is generated (no files, no download) and a pure
function of the seed.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

EXIF_NOT_TIFF = b"Exif\x00\x00NOTATIFF" + bytes(16)
"""An EXIF block whose payload is not TIFF data (``SyntaxError: not a TIFF file`` in ``ImageOps.exif_transpose``)."""

TRUNCATED_EXIF = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12"
"""A big-endian TIFF header announcing 5 IFD entries, cut after 2 bytes of the first."""


def _save(image: Image.Image, format: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **kwargs)
    return buffer.getvalue()


def _picture(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A smooth gradient with noise: compresses like a photo, not like a flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(1, width - 1), y * 255 / max(1, height - 1), (x + y) % 256], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _frames(count: int, width: int, height: int) -> list[Image.Image]:
    return [_picture(width, height, seed=i) for i in range(count)]


def valid_images() -> dict[str, bytes]:
    """Valid (or deliberately odd but well-formed) files of every format and mode the issue lists, by name.

    Names ending in ``!bad_exif`` or ``!aspect`` are well-formed files that training must still skip.
    """
    rotated = _picture(48, 32, 1)
    exif = rotated.getexif()
    exif[0x0112] = 6
    palette = _picture(40, 30, 2).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    gif_frames = [frame.convert("P", palette=Image.Palette.ADAPTIVE, colors=8) for frame in _frames(3, 32, 24)]
    float_tiff = Image.fromarray(np.array([[np.nan, np.inf], [-np.inf, 3.5]] * 8, dtype=np.float32))
    images = {
        "jpeg_rgb": _save(_picture(64, 48, 0), "JPEG", quality=90),
        "jpeg_exif_rotated": _save(rotated, "JPEG", exif=exif),
        "jpeg_progressive": _save(_picture(64, 48, 3), "JPEG", progressive=True),
        "jpeg_cmyk": _save(_picture(40, 40, 4, "CMYK"), "JPEG"),
        "jpeg_gray": _save(_picture(40, 40, 5, "L"), "JPEG"),
        "jpeg_huge_icc": _save(_picture(32, 32, 6), "JPEG", icc_profile=bytes(random.Random(0).randbytes(300_000))),
        "jpeg_1x1": _save(Image.new("RGB", (1, 1), (9, 9, 9)), "JPEG"),
        "jpeg_truncated_exif": _save(_picture(32, 24, 7), "JPEG", exif=TRUNCATED_EXIF, dpi=(72, 72)),
        "jpeg_exif_not_tiff!bad_exif": _save(_picture(32, 24, 8), "JPEG", exif=EXIF_NOT_TIFF, dpi=(72, 72)),
        "png_rgb": _save(_picture(50, 40, 9), "PNG"),
        "png_rgba": _save(_picture(50, 40, 10, "RGBA"), "PNG"),
        "png_palette_transparency": _save(palette, "PNG", transparency=0),
        "png_gray16": _save(Image.fromarray((np.arange(48 * 32).reshape(32, 48) * 40).astype(np.uint16)), "PNG"),
        "png_la": _save(_picture(30, 30, 11, "LA"), "PNG"),
        "png_1bit": _save(_picture(30, 30, 12, "1"), "PNG"),
        "png_1x1": _save(Image.new("RGB", (1, 1)), "PNG"),
        "png_exif_rotated": _save(rotated, "PNG", exif=exif),
        "png_animated": _save(_frames(3, 32, 24)[0], "PNG", save_all=True, append_images=_frames(3, 32, 24)[1:]),
        "png_wide!aspect": _save(Image.new("RGB", (2000, 2)), "PNG"),
        "png_tall": _save(_picture(4, 60, 13), "PNG"),
        "gif_animated_transparency": _save(
            gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:], transparency=0, loop=0
        ),
        "webp_lossy": _save(_picture(48, 32, 14), "WEBP", quality=80),
        "webp_lossless_rgba": _save(_picture(48, 32, 15, "RGBA"), "WEBP", lossless=True),
        "webp_animated": _save(_frames(3, 32, 24)[0], "WEBP", save_all=True, append_images=_frames(3, 32, 24)[1:]),
        "tiff_raw": _save(_picture(40, 30, 16), "TIFF"),
        "tiff_lzw": _save(_picture(40, 30, 17), "TIFF", compression="tiff_lzw"),
        "tiff_cmyk": _save(_picture(40, 30, 18, "CMYK"), "TIFF"),
        "tiff_float_nan": _save(float_tiff, "TIFF"),
        "tiff_int32": _save(Image.fromarray(np.arange(64, dtype=np.int32).reshape(8, 8) * 1000), "TIFF"),
        "tiff_multipage": _save(_frames(2, 24, 24)[0], "TIFF", save_all=True, append_images=_frames(2, 24, 24)[1:]),
        "bmp": _save(_picture(20, 20, 19), "BMP"),
    }
    return images


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random damage: byte flips, a truncation, an insertion, a deletion, a duplicated run, or a garbled header."""
    data = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:  # flip a few bytes anywhere
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # cut
        data = data[: rng.randrange(len(data))]
    elif kind == 2:  # insert random bytes
        i = rng.randrange(len(data) + 1)
        data[i:i] = rng.randbytes(rng.randint(1, 64))
    elif kind == 3:  # delete a run
        i = rng.randrange(len(data))
        del data[i : i + rng.randint(1, 64)]
    elif kind == 4:  # duplicate a run (repeated markers, chunks)
        i = rng.randrange(len(data))
        data[i:i] = data[i : i + rng.randint(1, 256)]
    else:  # garble the header, where sizes, offsets and counts live
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(min(len(data), 128))
            data[i] = rng.randrange(256)
    return bytes(data)


def mutations(count: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)``: every valid image once, then ``count`` seeded mutations of them (1-3 damages each)."""
    images = valid_images()
    yield from images.items()
    names = sorted(images)
    rng = random.Random(seed)
    for i in range(count):
        name = names[rng.randrange(len(names))]
        data = images[name]
        for _ in range(rng.randint(1, 3)):
            data = mutate(data, rng) or data[:1]
        yield f"{name.split('!')[0]}~{i}", data


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR announcing ``width x height`` RGB, then an empty IDAT and IEND (no pixels)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def png_blank(width: int, height: int) -> bytes:
    """A complete, valid black RGB PNG of ``width x height``, written row by row (fast, and small: zeros compress)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    compressor = zlib.compressobj(1)
    row = bytes(1 + 3 * width)  # filter byte 0, then black pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
