"""Packed images (NaViT-style) under flash-attention 2 (varlen kernels) give sdpa's features."""

import pytest
import torch
from tiny_models import TINY_SIGLIP

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_packed_images_flash_attention_matches_sdpa():
    pytest.importorskip("flash_attn", reason="pip install -e '.[gpu]'")
    from vlmkit.vision import TransformersVisionEncoder

    torch.manual_seed(0)
    encoders = {}
    for attn in ("sdpa", "flash_attention_2"):
        torch.manual_seed(0)
        encoders[attn] = TransformersVisionEncoder(
            config=TINY_SIGLIP, torch_dtype="bfloat16", attn_implementation=attn, patch_packing=True
        ).cuda()
    assert encoders["flash_attention_2"].backbone.config._attn_implementation == "flash_attention_2"
    pixels = torch.randn(3, 3, 32, 40, device="cuda", dtype=torch.bfloat16)
    patch_mask = torch.zeros(3, 4, 5, dtype=torch.bool, device="cuda")
    for i, (rows, cols) in enumerate([(4, 5), (2, 3), (3, 5)]):
        patch_mask[i, :rows, :cols] = True
    with torch.no_grad():
        sdpa = encoders["sdpa"](pixels, patch_mask)
        flash = encoders["flash_attention_2"](pixels, patch_mask)
        padded = TransformersVisionEncoder(config=TINY_SIGLIP, torch_dtype="bfloat16", attn_implementation="sdpa")
        padded.load_state_dict(encoders["sdpa"].state_dict())
        reference = padded.cuda()(pixels, patch_mask)
    real = patch_mask.flatten(1)
    torch.testing.assert_close(flash[real].float(), sdpa[real].float(), atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(flash[real].float(), reference[real].float(), atol=3e-2, rtol=3e-2)
