import io

import numpy as np
import pytest
import torch
from PIL import Image

from vlmkit.data.image_processing import ImageProcessor, target_size, to_rgb


@pytest.mark.parametrize(("h", "w"), [(40, 120), (300, 100), (97, 97), (1, 1), (1, 500), (2000, 30)])
def test_target_size_keeps_aspect_ratio_within_a_patch_and_respects_max(h, w):
    patch, lo, hi = 8, 32, 96
    th, tw = target_size(h, w, patch, hi, lo)
    assert th % patch == 0 and tw % patch == 0
    assert max(th, tw) <= hi and min(th, tw) >= patch
    scale = th / h
    # each side is within one patch of the exact rescale (unless clamped to one patch)
    assert abs(tw - w * scale) <= patch or tw == patch or max(th, tw) == hi


def test_small_images_are_upscaled_to_the_minimum():
    assert target_size(10, 20, 8, 96, 32) == (32, 64)
    assert target_size(1, 1, 8, 96, 32) == (32, 32)


def test_processor_normalises_with_encoder_statistics():
    processor = ImageProcessor(
        8, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), max_image_size=64, min_image_size=16
    )
    pixels = processor(Image.new("RGB", (40, 24), (255, 0, 128)))
    assert pixels.shape == (3, 24, 40)
    assert torch.allclose(pixels[:, 0, 0], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-6)


def test_mode_conversions_give_rgb():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent -> white background
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    gray16 = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    assert to_rgb(gray16).getpixel((0, 0)) == (255, 255, 255)
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    red = to_rgb(cmyk).getpixel((0, 0))
    assert red[0] > 200 and red[1] < 50 and red[2] < 50
    palette = Image.new("P", (8, 8), 0)
    assert to_rgb(palette).mode == "RGB"


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    loaded = Image.open(io.BytesIO(buffer.getvalue()))
    assert to_rgb(loaded).size == (10, 20)


def test_invalid_arguments_name_the_argument():
    with pytest.raises(ValueError, match="min_image_size"):
        ImageProcessor(8, max_image_size=32, min_image_size=64)
    with pytest.raises(ValueError, match="patch_size"):
        ImageProcessor(0)


def test_image_files_load_by_path_and_bad_files_are_named(tmp_path):
    from vlmkit.data.image_processing import load_image

    path = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif)
    processor = ImageProcessor(2, max_image_size=64, min_image_size=2)
    assert processor(path).shape == (3, 20, 10)  # EXIF rotation survives loading from a file
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    broken = tmp_path / "broken.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    broken.write_bytes(buffer.getvalue()[:60])  # truncated
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_image(broken)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt"):
        processor(text)
