"""Tiny images for the fake benchmark layouts the reader tests build in ``tmp_path``."""

import io
from pathlib import Path

import pytest
from PIL import Image


def _encode(fmt: str = "PNG", color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def encoded_image():
    """``encoded_image(fmt="PNG", color=...)`` -> the bytes of a 4x3 image."""
    return _encode


@pytest.fixture
def write_image():
    """``write_image(path, fmt=None)`` writes a 4x3 image (format from the suffix) and returns ``path``."""

    def write(path: Path, fmt: str | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
        path.write_bytes(_encode(fmt))
        return path

    return write
