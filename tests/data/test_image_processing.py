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


def quadrants(width: int = 40, height: int = 24) -> Image.Image:
    image = Image.new("RGB", (width, height))
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for i, color in enumerate(colors):
        r, c = divmod(i, 2)
        image.paste(color, (c * width // 2, r * height // 2, (c + 1) * width // 2, (r + 1) * height // 2))
    return image


def test_splitting_gives_four_row_major_crops_then_the_image_all_at_its_size():
    processor = ImageProcessor(8, max_image_size=64, min_image_size=16)
    views = processor.process(quadrants(), split_images=True)
    assert len(views) == 5 and {tuple(v.shape) for v in views} == {(3, 24, 40)}
    expected = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    for view, color in zip(views[:4], expected):
        assert torch.allclose(view.mean((1, 2)), color, atol=1e-4)  # each crop is one quadrant, upscaled
    assert torch.equal(views[4], processor(quadrants()))


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (300, 2)])
def test_splitting_degenerate_images_never_crashes(size):
    views = ImageProcessor(8, max_image_size=64, min_image_size=16).process(Image.new("RGB", size), split_images=True)
    assert len(views) == 5 and len({tuple(v.shape) for v in views}) == 1


def test_random_upscaling_only_with_an_rng_and_capped():
    import random

    processor = ImageProcessor(8, max_image_size=96, min_image_size=16, upscale_probability=1.0, max_upscale=2.0)
    image = Image.new("RGB", (40, 24))
    assert processor(image).shape == (3, 24, 40)  # evaluation: no rng, no augmentation
    sizes = {tuple(processor(image, rng=random.Random(seed)).shape) for seed in range(20)}
    assert len(sizes) > 3 and all(40 <= w <= 80 and 24 <= h <= 48 for _, h, w in sizes)
    big = Image.new("RGB", (96, 48))
    assert processor(big, rng=random.Random(0)).shape == (3, 48, 96)  # the max size still caps
    assert torch.equal(processor(image, rng=random.Random(3)), processor(image, rng=random.Random(3)))
    with pytest.raises(ValueError, match="upscale_probability"):
        ImageProcessor(8, upscale_probability=2.0)


def test_aspect_ratio_kept_within_one_patch_over_many_sizes():
    import random

    rng = random.Random(0)
    for _ in range(500):
        h, w = rng.randint(1, 3000), rng.randint(1, 3000)
        th, tw = target_size(h, w, 14, 980, 378)
        assert max(th, tw) <= 980 and th % 14 == 0 and tw % 14 == 0
        if min(th, tw) > 14:  # not clamped to a single patch row or column
            assert abs(tw - th * w / h) <= 14 * (1 + w / h) and abs(th - tw * h / w) <= 14 * (1 + h / w)


def test_real_files_of_every_mode_become_correct_rgb(tmp_path):
    processor = ImageProcessor(8, image_mean=(0, 0, 0), image_std=(1, 1, 1), max_image_size=64, min_image_size=8)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(cmyk, quality=100)  # red
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16)).save(gray16)  # mid grey, 16-bit
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (16, 16), (0, 0, 255, 128)).save(rgba)  # half-transparent blue over white
    rotated = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (32, 16), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 16, 16))  # red on the left half
    exif = image.getexif()
    exif[0x0112] = 8  # displayed rotated 90 degrees counter-clockwise: red ends up at the bottom
    image.save(rotated, exif=exif, quality=100)
    with Image.open(gray16) as opened:
        assert opened.mode.startswith("I")  # really a 16-bit file

    red = processor(cmyk).mean((1, 2))
    assert red[0] > 0.9 and red[1] < 0.1 and red[2] < 0.1
    assert torch.allclose(processor(gray16).mean((1, 2)), torch.full((3,), 32768 / 65535), atol=0.01)
    blue = processor(rgba).mean((1, 2))
    assert torch.allclose(blue, torch.tensor([127 / 255, 127 / 255, 1.0]), atol=0.01)
    turned = processor(rotated)
    assert turned.shape == (3, 32, 16)
    assert turned[0, 24:, :].mean() > 0.9 and turned[0, :8, :].mean() < 0.1  # red at the bottom


def test_the_old_argument_name_still_works_with_a_warning():
    processor = ImageProcessor(8, max_image_size=64, min_image_size=16)
    with pytest.warns(FutureWarning, match=r"process\(split=...\) is now .*process\(split_images=...\)"):
        assert len(processor.process(quadrants(), split=True)) == 5


def test_square_mode_resizes_every_image_to_max_size_squared():
    processor = ImageProcessor(8, max_image_size=50, min_image_size=16, resize_mode="square")
    wide = Image.new("RGB", (120, 30), (255, 0, 0))
    assert processor(wide).shape == (3, 48, 48)  # 50 rounded down to the patch size, aspect ratio dropped
    assert processor.output_size(30, 120) == (48, 48) and processor.output_size(300, 10) == (48, 48)
    assert ImageProcessor(8, max_image_size=50, min_image_size=16).output_size(30, 120) == (16, 48)
    views = processor.process(wide, split_images=True)
    assert [tuple(v.shape) for v in views] == [(3, 48, 48)] * 5
    assert torch.allclose(processor(wide).mean((1, 2)), torch.tensor([1.0, -1.0, -1.0]), atol=1e-4)
    with pytest.raises(ValueError, match="resize_mode must be one of .*'square'.*got 'stretch'"):
        ImageProcessor(8, resize_mode="stretch")
