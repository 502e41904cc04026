"""Batching variable-length text and variable-size images.

Text is padded to the longest sample (right for training, left for generation).
Images of different sizes are padded bottom/right to the largest height and width
in the batch, with a patch mask telling real patches from padding (NaViT-style),
so no image is squashed or cropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from vlmkit.text.template import IGNORE_INDEX


def pad_images(images: Sequence[torch.Tensor], patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[3, H_i, W_i]`` images into ``[n, 3, H, W]`` plus a patch mask ``[n, H/patch, W/patch]``.

    Raises:
        ValueError: If a side is not a multiple of ``patch_size`` (naming the image index and shape).
    """
    for i, image in enumerate(images):
        if image.shape[1] % patch_size or image.shape[2] % patch_size:
            raise ValueError(f"image {i} has shape {tuple(image.shape)}: sides must be multiples of {patch_size}")
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    pixels = images[0].new_zeros(len(images), 3, height, width)
    patch_mask = torch.zeros(len(images), height // patch_size, width // patch_size, dtype=torch.bool)
    for i, image in enumerate(images):
        pixels[i, :, : image.shape[1], : image.shape[2]] = image
        patch_mask[i, : image.shape[1] // patch_size, : image.shape[2] // patch_size] = True
    return pixels, patch_mask


class VLMCollator:
    """Collate processed samples into a model batch.

    Args:
        pad_token_id: Id used to pad ``input_ids``.
        patch_size: The vision encoder's patch size.
        padding_side: ``"right"`` for training, ``"left"`` for generation.

    Keys other than ``input_ids``, ``labels`` and ``pixel_values`` are gathered into lists.
    """

    def __init__(self, pad_token_id: int, patch_size: int, padding_side: Literal["left", "right"] = "right") -> None:
        self.pad_token_id = pad_token_id
        self.patch_size = patch_size
        self.padding_side = padding_side

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Pad and stack ``samples``."""
        length = max(len(s["input_ids"]) for s in samples)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for i, sample in enumerate(samples):
            n = len(sample["input_ids"])
            span = slice(length - n, length) if self.padding_side == "left" else slice(0, n)
            input_ids[i, span] = sample["input_ids"]
            labels[i, span] = sample["labels"]
            attention_mask[i, span] = 1
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        images = [image for sample in samples for image in sample["pixel_values"]]
        if images:
            batch["pixel_values"], batch["patch_mask"] = pad_images(images, self.patch_size)
        extra_keys = set(samples[0]) - {"input_ids", "labels", "pixel_values"}
        for key in sorted(extra_keys):
            batch[key] = [sample.get(key) for sample in samples]
        return batch
