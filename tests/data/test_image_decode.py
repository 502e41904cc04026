"""Decoding untrusted images: bad EXIF is a counted skip, large images decode small, pixels are limited, and only
images that survive truncation are decoded."""

import io
import subprocess
import sys
import textwrap

import pytest
from hostile_images import EXIF_NOT_TIFF, png_blank, png_header_only
from PIL import Image
from torch.utils.data import DataLoader

from vlmkit.data.formats import BadSample, Record
from vlmkit.data.image_decode import DEFAULT_MAX_IMAGE_PIXELS, EncodedImage, decode_image
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.mixture import MixtureStream
from vlmkit.data.render import SampleRenderer, unsplit_image_spans
from vlmkit.data.shard_source import ShardSource
from vlmkit.data.shards import ShardItem, write_shards
from vlmkit.data.stats import DataStats


def _bytes(image, format, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format=format, **kwargs)
    return buffer.getvalue()


def bad_exif_jpeg():
    """A JPEG whose EXIF block is not TIFF data (with a JFIF dpi, so Pillow does not parse the EXIF at open)."""
    return _bytes(Image.new("RGB", (24, 16), (200, 10, 10)), "JPEG", exif=EXIF_NOT_TIFF, dpi=(72, 72))


def renderer(vlm, max_length=512, max_image_size=32, **kwargs):
    processor = ImageProcessor(vlm.vision_encoder.patch_size, max_image_size=max_image_size, min_image_size=16)
    return SampleRenderer(vlm.tokenizer, processor, vlm.num_image_tokens, max_length, **kwargs)


def test_exif_that_is_not_tiff_skips_the_sample_in_training_instead_of_crashing(tmp_path, tiny_vlm):
    good = _bytes(Image.new("RGB", (24, 16), (0, 0, 200)), "PNG")
    items = [
        ShardItem("good1", {"images": ["0.png"], "caption": "blue"}, [("0.png", good)]),
        ShardItem("exif", {"images": ["0.jpg"], "caption": "red"}, [("0.jpg", bad_exif_jpeg())]),
        ShardItem("good2", {"images": ["0.png"], "caption": "blue"}, [("0.png", good)]),
    ]
    write_shards(items, tmp_path, "pair")  # ShardItems are written as given (the build's own check is bypassed)
    source = ShardSource(str(tmp_path), "pair", shuffle_buffer=0, max_length=128)
    stats = DataStats([source.name], 1)
    stream = MixtureStream([source], [renderer(tiny_vlm)], stats, endless=False)
    samples = list(DataLoader(stream, batch_size=None, num_workers=0))
    assert len(samples) == 2
    assert stats.totals() == {"pair/ok": 2, "pair/corrupt_image": 1}


def test_exif_that_is_not_tiff_is_named_by_the_processor(tmp_path):
    path = tmp_path / "bad_exif.jpg"
    path.write_bytes(bad_exif_jpeg())
    with pytest.raises(ValueError, match=r"cannot read image .*bad_exif\.jpg.*not a TIFF file"):
        ImageProcessor(8, max_image_size=32, min_image_size=8)(path)


def test_a_large_jpeg_decodes_at_a_reduced_scale_to_at_least_the_size_needed():
    data = _bytes(Image.new("L", (6000, 6000), 128), "JPEG", quality=50)
    image = EncodedImage.open(data, "big.jpg")
    decoded = image.decode((980, 980))
    assert decoded.size == (1500, 1500)  # 1/4 scale: >= 980 and < 2 x 980, instead of 6000 x 6000
    assert decoded.mode == "RGB"
    processor = ImageProcessor(14, max_image_size=980, min_image_size=378)
    assert tuple(processor(image).shape) == (3, 980, 980)


def test_an_image_beyond_the_pixel_limit_is_skipped_before_decoding():
    header = png_header_only(12_000, 12_000)  # no pixel data: decoding it would fail as corrupt_image
    with pytest.raises(BadSample) as caught:
        EncodedImage.open(header, "huge.png", max_pixels=DEFAULT_MAX_IMAGE_PIXELS)
    assert caught.value.reason == "too_many_pixels" and "12000x12000" in caught.value.detail
    # a JPEG counts at the 1/8 scale it can decode at: 12000 x 12000 passes the open check...
    jpeg = EncodedImage.open(_bytes(Image.new("L", (16, 16)), "JPEG"), "small.jpg", max_pixels=4)  # 2 x 2 at 1/8
    with pytest.raises(BadSample, match="too_many_pixels"):  # ...and is limited at the size it really decodes at
        jpeg.decode((16, 16), max_pixels=4)
    assert jpeg.decode((2, 2), max_pixels=4).size == (2, 2)


def test_the_per_source_pixel_limit_is_counted(shard_dirs):
    source = ShardSource(str(shard_dirs["pair"]), "pair", shuffle_buffer=0, max_image_pixels=40 * 40)
    records = list(source.records(0, 1, 0, endless=False))
    skipped = [r for r in records if isinstance(r, BadSample)]
    assert skipped and {r.reason for r in skipped} == {"too_many_pixels"}
    assert all(r.width * r.height <= 1600 for rec in records if isinstance(rec, Record) for r in rec.images)
    with pytest.raises(ValueError, match="max_image_pixels"):
        ShardSource(str(shard_dirs["pair"]), "pair", max_image_pixels=0)


def test_truncation_decodes_only_the_images_it_keeps(tiny_vlm, monkeypatch):
    png = _bytes(Image.new("RGB", (1600, 1200), (90, 90, 90)), "PNG")
    images = [EncodedImage.open(png, f"image {i}") for i in range(8)]
    texts, refs = [], []
    for i in range(8):
        texts += [f"Picture {i}.", None]
        refs += [None, f"{i}.png"]
    record = Record("doc", "interleaved", {"texts": texts, "images": refs}, images)
    full = renderer(tiny_vlm, max_length=10_000)(record)
    third = unsplit_image_spans(full["input_ids"].tolist(), tiny_vlm.tokenizer.convert_tokens_to_ids("<image>"))[2]
    decoded = []
    original = EncodedImage.decode

    def counting(self, size=None, max_pixels=None):
        decoded.append(self.where)
        return original(self, size, max_pixels)

    monkeypatch.setattr(EncodedImage, "decode", counting)
    out = renderer(tiny_vlm, max_length=third[0] + 1)(record)
    assert out["dropped_images"] == 6 and len(out["pixel_values"]) == 2
    assert decoded == ["image 0", "image 1"]  # the 6 dropped images were never decoded


def test_a_pil_image_given_by_the_caller_is_not_changed():
    image = Image.open(io.BytesIO(_bytes(Image.new("RGB", (400, 300), (1, 2, 3)), "JPEG")))
    decoded = decode_image(image, (30, 40))
    assert image.size == (400, 300)  # no in-place draft on the caller's object
    assert decoded.size == (40, 30) and decoded.mode == "RGB"  # box-reduced by 10 after decoding


@pytest.mark.integration
def test_a_12000_x_12000_png_does_not_blow_up_a_worker(tmp_path):
    """The issue's 12000 x 12000 PNG (below Pillow's bomb limit) reached 2.2 GB; now it is skipped undecoded."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_blank(12_000, 12_000))
    script = textwrap.dedent(
        f"""
        import json, resource
        from vlmkit.data.formats import BadSample
        from vlmkit.data.shard_source import decode_sample
        raw = {{"__key__": "k", "__url__": "s.tar", "json": b'{{"images": ["0.png"], "caption": "x"}}',
               "0.png": open({str(path)!r}, "rb").read()}}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            decode_sample(raw, "pair", 16.0, {DEFAULT_MAX_IMAGE_PIXELS})
            reason = "used"
        except BadSample as bad:
            reason = bad.reason
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"reason": reason, "grew_kb": after - before}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    report = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert report["reason"] == "too_many_pixels"
    assert report["grew_kb"] < 50_000  # decoding it would take 144 MB (L) to 432 MB (RGB)


@pytest.mark.parametrize("mode", ["I;16", "P", "1"])
def test_reducing_before_conversion_keeps_what_the_pixels_mean(mode):
    import numpy as np

    if mode == "I;16":  # dark in 16 bits: 200 of 65535, not 200 of 255
        image = Image.fromarray(np.full((64, 64), 200, dtype=np.uint16))
    elif mode == "P":
        image = Image.new("RGB", (64, 64), (250, 20, 20)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    else:
        image = Image.new("1", (64, 64), 1)
    data = _bytes(image, "PNG")
    small = EncodedImage.open(data, mode).decode((8, 8))  # reduced by 8 before conversion
    full = EncodedImage.open(data, mode).decode()
    assert small.size == (8, 8) and full.size == (64, 64)
    assert small.getpixel((4, 4)) == full.getpixel((4, 4))
