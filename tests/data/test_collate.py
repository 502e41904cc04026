import pytest
import torch

from vlmkit.data.collate import VLMCollator, pad_images
from vlmkit.text.template import IGNORE_INDEX


def test_pad_images_masks_padding_patches():
    a, b = torch.ones(3, 16, 24), torch.full((3, 32, 8), 2.0)
    pixels, mask = pad_images([a, b], patch_size=8)
    assert pixels.shape == (2, 3, 32, 24) and mask.shape == (2, 4, 3)
    assert mask[0].sum() == 2 * 3 and mask[1].sum() == 4 * 1
    assert mask[0, :2, :].all() and not mask[0, 2:, :].any()
    assert torch.equal(pixels[1, :, :, :8], b) and pixels[1, :, :, 8:].abs().sum() == 0


def test_pad_images_rejects_sides_off_the_patch_grid():
    with pytest.raises(ValueError, match=r"image 1 has shape \(3, 10, 8\)"):
        pad_images([torch.zeros(3, 8, 8), torch.zeros(3, 10, 8)], patch_size=8)


@pytest.mark.parametrize("side", ["left", "right"])
def test_collator_pads_text_and_keeps_metadata(side):
    samples = [
        {
            "input_ids": torch.tensor([5, 6, 7]),
            "labels": torch.tensor([-100, 6, 7]),
            "pixel_values": [torch.zeros(3, 8, 8)],
            "answer": "a",
        },
        {"input_ids": torch.tensor([9]), "labels": torch.tensor([9]), "pixel_values": [], "answer": "b"},
    ]
    batch = VLMCollator(pad_token_id=0, patch_size=8, padding_side=side)(samples)
    assert batch["input_ids"].shape == (2, 3)
    expected = [0, 0, 9] if side == "left" else [9, 0, 0]
    assert batch["input_ids"][1].tolist() == expected
    assert batch["attention_mask"][1].tolist() == [int(t != 0) for t in expected]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX if t == 0 else 9 for t in expected]
    assert batch["answer"] == ["a", "b"]
    assert batch["pixel_values"].shape == (1, 3, 8, 8)
