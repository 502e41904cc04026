"""Tests for patch packing (NaViT-style) in both vision encoders: same features and gradients as the padded path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from padded_images import padded_batch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

from vlmkit.vision import TimmVisionEncoder, TransformersVisionEncoder

TOWER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
TIMM = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
# family -> (constructor, kwargs); every encoder below has 8-px patches and hidden size 32
FAMILIES = {
    "siglip-interpolate": (TransformersVisionEncoder, {"config": {"model_type": "siglip_vision_model", **TOWER}}),
    "siglip-bucket": (
        TransformersVisionEncoder,
        {"config": {"model_type": "siglip_vision_model", **TOWER}, "position_embedding": "bucket"},
    ),
    "clip": (TransformersVisionEncoder, {"config": {"model_type": "clip_vision_model", **TOWER}}),
    "idefics2": (TransformersVisionEncoder, {"config": {"model_type": "idefics2_vision", **TOWER}}),
    "timm-cls": (TimmVisionEncoder, {"model_name": "vit_tiny_patch16_224", "model_kwargs": TIMM}),
    "timm-registers": (TimmVisionEncoder, {"model_name": "vit_small_patch14_reg4_dinov2", "model_kwargs": TIMM}),
    "timm-bucket": (
        TimmVisionEncoder,
        {"model_name": "vit_tiny_patch16_224", "model_kwargs": TIMM, "position_embedding": "bucket"},
    ),
}
TRANSFORMERS_FAMILIES = ["siglip-interpolate", "siglip-bucket", "clip", "idefics2"]
ATOL = 1e-5


def build(family: str, packing: bool, **kwargs) -> TransformersVisionEncoder | TimmVisionEncoder:
    """The family's tiny encoder; the same seed gives the same weights with and without packing."""
    constructor, family_kwargs = FAMILIES[family]
    torch.manual_seed(0)
    return constructor(**family_kwargs, **kwargs, patch_packing=packing).eval()


def first_layer(encoder) -> torch.nn.Module:
    return encoder.model.blocks[0] if isinstance(encoder, TimmVisionEncoder) else encoder.backbone.encoder.layers[0]


def num_prefix_tokens(encoder) -> int:
    return encoder.model.num_prefix_tokens if isinstance(encoder, TimmVisionEncoder) else encoder.num_prefix_tokens


def real_rows(features: torch.Tensor, patch_mask: torch.Tensor, index: int) -> torch.Tensor:
    """``[h*w, d]`` features of image ``index``'s real patches, row-major."""
    return features[index][patch_mask[index].flatten()]


@torch.no_grad()
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("family", TRANSFORMERS_FAMILIES)
def test_transformers_packed_equals_padded_and_alone(family, impl):
    check_packed_equals_padded_and_alone(family, attn_implementation=impl)


@torch.no_grad()
@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "manual-attention"])
@pytest.mark.parametrize("family", ["timm-cls", "timm-registers", "timm-bucket"])
def test_timm_packed_equals_padded_and_alone(family, fused):
    check_packed_equals_padded_and_alone(family, fused=fused)


def check_packed_equals_padded_and_alone(family: str, fused: bool | None = None, **kwargs) -> None:
    padded, packed = build(family, packing=False, **kwargs), build(family, packing=True, **kwargs)
    if fused is not None:
        for block in [*padded.model.blocks, *packed.model.blocks]:
            block.attn.fused_attn = fused
    pixels, patch_mask, images = padded_batch()
    expected, features = padded(pixels, patch_mask), packed(pixels, patch_mask)
    real = patch_mask.flatten(1)
    assert features.shape == expected.shape == (4, 25, 32)
    torch.testing.assert_close(features[real], expected[real], atol=ATOL, rtol=0)
    assert torch.equal(features[~real], torch.zeros_like(features[~real]))  # padding rows are zero
    for index, image in enumerate(images):
        torch.testing.assert_close(real_rows(features, patch_mask, index), packed(image)[0], atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("family", ["clip", "timm-registers", "siglip-bucket"])
def test_packed_sequence_holds_only_real_tokens(family):
    encoder = build(family, packing=True)
    shapes = []
    first_layer(encoder).register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    pixels, patch_mask, _ = padded_batch()
    encoder(pixels, patch_mask)
    expected = int(patch_mask.sum()) + len(pixels) * num_prefix_tokens(encoder)  # 15 + 10 + 25 + 6 patches
    assert shapes == [(1, expected, 32)]


@pytest.mark.parametrize("family", ["siglip-interpolate", "clip", "idefics2", "timm-cls", "timm-registers"])
def test_packed_gradients_equal_padded(family):
    pixels, patch_mask, _ = padded_batch()
    real = patch_mask.flatten(1)
    weights = torch.randn(4, 25, 32, generator=torch.Generator().manual_seed(3))
    grads = []
    for packing in (False, True):
        encoder = build(family, packing=packing).train()
        (encoder(pixels, patch_mask) * weights)[real].mean().backward()  # padding rows carry no loss in either path
        if isinstance(encoder, TimmVisionEncoder):
            grads.append((encoder.model.patch_embed.proj.weight.grad, encoder.model.pos_embed.grad))
        else:
            embeddings = encoder.backbone.embeddings
            grads.append((embeddings.patch_embedding.weight.grad, embeddings.position_embedding.weight.grad))
    for padded_grad, packed_grad in zip(*grads):
        assert padded_grad.abs().sum() > 0
        torch.testing.assert_close(packed_grad, padded_grad, atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("family", ["clip", "timm-registers"])
def test_packing_without_padding_is_the_plain_path(family):
    plain, packed = build(family, packing=False), build(family, packing=True)
    pixels = torch.randn(2, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(packed(pixels), plain(pixels))
    assert torch.equal(packed(pixels, torch.ones(2, 3, 5, dtype=torch.bool)), plain(pixels))


@torch.no_grad()
def test_packing_a_single_padded_image_crops_it():
    encoder = build("siglip-interpolate", packing=True)
    pixels, patch_mask, images = padded_batch(((24, 40), (40, 16)))
    features = encoder(pixels[1:], patch_mask[1:])  # one 5 x 2 image in a 5 x 5 grid: one segment, no mask
    torch.testing.assert_close(real_rows(features, patch_mask[1:], 0), encoder(images[1])[0], atol=ATOL, rtol=0)


def _varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """A stand-in for a flash varlen kernel: attention within each ``cu_seq_lens_q`` segment, no mask."""
    assert attention_mask is None and query.shape[0] == 1
    assert kwargs["max_length_q"] == kwargs["max_length_k"] and kwargs["cu_seq_lens_k"] is kwargs["cu_seq_lens_q"]
    bounds = kwargs["cu_seq_lens_q"].tolist()
    segments = [
        F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], scale=scaling)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(segments, dim=2).transpose(1, 2), None  # [1, S, heads, head_dim]


@torch.no_grad()
def test_flash_implementations_get_varlen_lengths(monkeypatch):
    monkeypatch.setitem(AttentionInterface._global_mapping, "vlmkit_test_flash_varlen", _varlen_attention)
    padded, packed = build("clip", packing=False), build("clip", packing=True)
    packed.backbone.config._attn_implementation = "vlmkit_test_flash_varlen"  # "flash" in the name: varlen path
    pixels, patch_mask, _ = padded_batch()
    real = patch_mask.flatten(1)
    torch.testing.assert_close(packed(pixels, patch_mask)[real], padded(pixels, patch_mask)[real], atol=ATOL, rtol=0)


@torch.no_grad()
def test_packing_refuses_an_implementation_without_block_masks(monkeypatch):
    name = "vlmkit_test_padding_only"  # takes a 2-D padding mask only (like flash) but gets no varlen lengths
    monkeypatch.setitem(AttentionInterface._global_mapping, name, _varlen_attention)
    monkeypatch.setitem(AttentionMaskInterface._global_mapping, name, flash_attention_mask)
    encoder = build("siglip-interpolate", packing=True)
    encoder.backbone.config._attn_implementation = name
    pixels, patch_mask, _ = padded_batch()
    with pytest.raises(ValueError, match="packing needs .* use 'sdpa' or 'eager'"):
        encoder(pixels, patch_mask)


@pytest.mark.parametrize("family", ["siglip-interpolate", "timm-cls"])
def test_the_old_argument_name_still_works_with_a_warning(family):
    constructor, family_kwargs = FAMILIES[family]
    with pytest.warns(FutureWarning, match=r"\(packing=...\) is now .*\(patch_packing=...\)"):
        encoder = constructor(**family_kwargs, packing=True)
    assert encoder.patch_packing
    with pytest.raises(ValueError, match="give patch_packing=True or the old packing=False, not both"):
        constructor(**family_kwargs, patch_packing=True, packing=False)
