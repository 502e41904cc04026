"""Fuzzing the image path: every hostile image is used or skipped with a known reason, in training and in the build.

``benchmarks/fuzz_images.py`` runs thousands of these through the real shard pipeline; here a few hundred seeded
mutations of valid JPEG/PNG/WebP/GIF/TIFF/BMP files (bad EXIF, huge ICC profile, animations, palette with
transparency, 16-bit, float, CMYK, 1x1, extreme aspect ratios) go through decoding + rendering, and the build.
"""

import json
from collections import Counter

import torch
from hostile_images import mutations

from vlmkit.data.formats import BadSample
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.render import SampleRenderer
from vlmkit.data.shard_source import decode_sample
from vlmkit.data.shards import _extension
from vlmkit.data.stats import REASONS

CAPTION = json.dumps({"images": ["0.img"], "caption": "a picture"}).encode()


def _train(renderer, name, data):
    """``"ok"`` or the skip reason of one image as a training sample; any other exception escapes."""
    raw = {"__key__": name.replace(".", "_"), "__url__": "fuzz.tar", "json": CAPTION, "0.img": data}
    try:
        sample = renderer(decode_sample(raw, "pair", 16.0, 1_000_000))
    except BadSample as bad:
        return bad.reason
    pixels = sample["pixel_values"]
    assert len(pixels) == 1 and pixels[0].shape[0] == 3 and torch.isfinite(pixels[0]).all(), name
    return "ok"


def _build(name, data):
    try:
        _extension(data, name, 1_000_000)
    except BadSample as bad:
        return bad.reason
    return "ok"


def test_hostile_images_are_used_or_skipped_with_a_reason_never_raised(tiny_vlm):
    processor = ImageProcessor(tiny_vlm.vision_encoder.patch_size, max_image_size=32, min_image_size=16)
    renderer = SampleRenderer(tiny_vlm.tokenizer, processor, tiny_vlm.num_image_tokens, 256, image_splitting=1.0)
    corpus = list(mutations(300, seed=0))
    train = {name: _train(renderer, name, data) for name, data in corpus}
    build = {name: _build(name, data) for name, data in corpus}
    counts = Counter(train.values())
    assert set(counts) <= {"ok", *REASONS} and sum(counts.values()) == len(corpus)
    assert counts["ok"] > 30 and counts["corrupt_image"] > 100  # both outcomes are exercised
    # the valid files: all used, except the two that are well-formed but must be skipped
    valid = {name: reason for name, reason in train.items() if "~" not in name}
    assert valid.pop("jpeg_exif_not_tiff!bad_exif") == "corrupt_image"
    assert valid.pop("png_wide!aspect") == "extreme_aspect_ratio"
    assert set(valid.values()) == {"ok"}, {k: v for k, v in valid.items() if v != "ok"}
    # what the build accepts, training uses (the build has no aspect-ratio limit: that is per source)
    assert set(build.values()) <= {"ok", *REASONS}
    accepted = [name for name, reason in build.items() if reason == "ok"]
    assert [name for name in accepted if train[name] not in ("ok", "extreme_aspect_ratio")] == []
