"""Tests for TimmVisionEncoder: reference outputs, padding invariance, bucket positions, feature layers, loading."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from padded_images import padded_pair, real_patches
from safetensors.torch import save_file
from timm.models.vision_transformer import Block
from transformers import AutoConfig
from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionEmbeddings

from vlmkit.interfaces import VisionEncoder
from vlmkit.trainability import apply_activation_checkpointing
from vlmkit.vision import TimmVisionEncoder, TransformersVisionEncoder

# pretrained grid 4 x 4 patches of 8 px
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
# CLS only; 4 registers + CLS outside the position table; no prefix (SigLIP); CLS + pre-norm (CLIP)
MODELS = [
    "vit_tiny_patch16_224",
    "vit_small_patch14_reg4_dinov2",
    "vit_base_patch16_siglip_224",
    "vit_base_patch16_clip_224",
]
ATOL = 1e-5


def build(model_name: str, img_size: int = 32, **kwargs) -> TimmVisionEncoder:
    torch.manual_seed(0)
    return TimmVisionEncoder(model_name, model_kwargs={**TINY, "img_size": img_size}, **kwargs).eval()


@pytest.fixture(scope="module")
def encoders() -> dict[str, TimmVisionEncoder]:
    return {name: build(name) for name in MODELS}


def reference(encoder: TimmVisionEncoder, pixel_values: torch.Tensor) -> torch.Tensor:
    """timm's own ``forward_features`` without prefix tokens."""
    return encoder.model.forward_features(pixel_values)[:, encoder.model.num_prefix_tokens :]


@torch.no_grad()
@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("size", [(32, 32), (24, 40)], ids=["pretrained", "non-square"])
def test_matches_forward_features(encoders, model_name, size):
    encoder = encoders[model_name]
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    features = encoder(pixels)
    assert features.shape == (2, size[0] * size[1] // 64, 32)
    torch.testing.assert_close(features, reference(encoder, pixels), atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "manual-attention"])
@pytest.mark.parametrize("mode", ["interpolate", "bucket"])
def test_padding_invariance(model_name, fused, mode):
    encoder = build(model_name, position_embedding=mode)
    for block in encoder.model.blocks:
        block.attn.fused_attn = fused
    pixels, patch_mask, first, second = padded_pair()
    batched = encoder(pixels, patch_mask)
    assert batched.shape == (2, 25, 32) and batched.isfinite().all()
    # interpolate is timm's own dynamic_img_size forward; bucket has no timm counterpart: the image alone
    alone = (lambda image: reference(encoder, image)) if mode == "interpolate" else encoder
    torch.testing.assert_close(real_patches(batched[0], 3, 5), alone(first)[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(real_patches(batched[1], 5, 2), alone(second)[0], atol=ATOL, rtol=0)


@torch.no_grad()
def test_padding_content_does_not_leak(encoders):
    encoder = encoders["vit_tiny_patch16_224"]
    pixels, patch_mask, _, _ = padded_pair()
    noisy = pixels.clone()
    noisy[1, :, :, 16:] = -50.0
    real = patch_mask.flatten(1)
    torch.testing.assert_close(encoder(noisy, patch_mask)[real], encoder(pixels, patch_mask)[real], atol=ATOL, rtol=0)


@torch.no_grad()
def test_positions_unchanged_at_pretrained_size(encoders):
    encoder = encoders["vit_tiny_patch16_224"]
    table = encoder.model.pos_embed  # [1, 1 + 16, d]
    patch_positions, prefix_positions = encoder._positions(torch.tensor([[4, 4], [2, 3]]), 4, 4, 1)
    assert torch.equal(patch_positions[0], table[0, 1:])
    assert torch.equal(prefix_positions, table[:, :1])


@torch.no_grad()
@pytest.mark.parametrize("model_name", MODELS)
def test_bucket_at_pretrained_size_is_the_original_table(model_name):
    encoder = build(model_name, position_embedding="bucket")
    prefix = 0 if encoder.model.no_embed_class else encoder.model.num_prefix_tokens
    table = encoder.model.pos_embed  # [1, prefix + 16, d]
    patch_positions, prefix_positions = encoder._positions(torch.tensor([[4, 4], [2, 3]]), 4, 4, prefix)
    assert torch.equal(patch_positions[0], table[0, prefix:])  # full 4 x 4 grid: identity ids
    assert torch.equal(prefix_positions, table[:, :prefix])
    assert not torch.equal(patch_positions[1], table[0, prefix:])
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(encoder(pixels), reference(encoder, pixels), atol=ATOL, rtol=0)


def _position_ids_read_back(table: torch.Tensor, read: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Write each row's index into channel 0 of a position ``table`` (others zero) and read ids back via ``read``."""
    with torch.no_grad():
        table.zero_()
        table[..., 0] = torch.arange(table.shape[-2], dtype=table.dtype)
        return read()[..., 0].round().long()


@pytest.mark.parametrize("side", [4, 7, 25])
def test_bucket_ids_match_transformers_encoder_and_idefics2(side):
    """Golden: same ids as the transformers encoder's bucket mode and Idefics2's own embeddings (at side 25 the
    float32 buckets are not the identity on the full grid, and must still agree)."""
    grid = side + 3
    sizes = torch.tensor([(h, w) for h in (1, 2, 5, side, grid) for w in (1, 3, side, grid)])  # [20, 2]
    patch_mask = (torch.arange(grid)[None, :, None] < sizes[:, 0, None, None]) & (
        torch.arange(grid)[None, None, :] < sizes[:, 1, None, None]
    )
    timm_encoder = build("vit_base_patch16_siglip_224", position_embedding="bucket", img_size=8 * side)
    timm_ids = _position_ids_read_back(
        timm_encoder.model.pos_embed, lambda: timm_encoder._positions(sizes, grid, grid, 0)[0]
    )
    tower = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    tower.update(image_size=8 * side, patch_size=8)
    transformers_encoder = TransformersVisionEncoder(
        config={"model_type": "siglip_vision_model", **tower}, position_embedding="bucket"
    )
    transformers_ids = _position_ids_read_back(
        transformers_encoder.backbone.embeddings.position_embedding.weight,
        lambda: transformers_encoder._patch_positions(sizes, grid, grid),
    )
    embeddings = Idefics2VisionEmbeddings(AutoConfig.for_model("idefics2_vision", **tower))
    with torch.no_grad():
        embeddings.patch_embedding.weight.zero_()
        embeddings.patch_embedding.bias.zero_()
    pixels = torch.zeros(len(sizes), 3, 8 * grid, 8 * grid)
    idefics2_ids = _position_ids_read_back(embeddings.position_embedding.weight, lambda: embeddings(pixels, patch_mask))
    assert torch.equal(timm_ids, transformers_ids) and torch.equal(timm_ids, idefics2_ids)
    full_grid = timm_ids[(sizes == side).all(1)][0].reshape(grid, grid)[:side, :side]  # the pretrained-size image
    assert torch.equal(full_grid.flatten(), torch.arange(side * side)) == (side != 25)  # 25: row 5 repeats row 4


@torch.no_grad()
@pytest.mark.parametrize("model_name", ["vit_tiny_patch16_224", "vit_small_patch14_reg4_dinov2"])
@pytest.mark.parametrize("feature_layer", [1, -2])
def test_feature_layer_matches_block_output_without_norm(model_name, feature_layer):
    encoder = build(model_name, feature_layer=feature_layer)
    pixels = torch.randn(1, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    block_index = feature_layer % (len(encoder.model.blocks) + 1) - 1
    (expected,) = encoder.model.forward_intermediates(
        pixels, indices=[block_index], norm=False, intermediates_only=True
    )
    torch.testing.assert_close(encoder(pixels), expected.flatten(2).transpose(1, 2), atol=ATOL, rtol=0)


def test_attributes_and_protocol(encoders):
    tiny, dinov2 = encoders["vit_tiny_patch16_224"], encoders["vit_small_patch14_reg4_dinov2"]
    assert isinstance(tiny, VisionEncoder)
    assert (tiny.hidden_size, tiny.patch_size) == (32, 8)
    assert tiny.block_class is Block
    assert tiny.image_mean == (0.5, 0.5, 0.5) and tiny.image_std == (0.5, 0.5, 0.5)
    assert dinov2.image_mean == pytest.approx((0.485, 0.456, 0.406))


def test_gradients_reach_position_table():
    encoder = build("vit_tiny_patch16_224").train()
    apply_activation_checkpointing(encoder, (encoder.block_class,))  # vlmkit's one switch
    pixels, patch_mask, _, _ = padded_pair()
    encoder(pixels, patch_mask)[patch_mask.flatten(1)].sum().backward()
    assert encoder.model.pos_embed.grad is not None and encoder.model.pos_embed.grad.abs().sum() > 0


@torch.no_grad()
@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_checkpoint_path_loads_weights(tmp_path, encoders, suffix):
    source = encoders["vit_tiny_patch16_224"]
    state_dict = {key: value.contiguous() for key, value in source.model.state_dict().items()}
    path = tmp_path / f"tiny.{suffix}"
    save_file(state_dict, path) if suffix == "safetensors" else torch.save(state_dict, path)
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded = TimmVisionEncoder("vit_tiny_patch16_224", checkpoint_path=str(path), model_kwargs=TINY).eval()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state_dict[key]), key
    pixels, patch_mask, _, _ = padded_pair()
    torch.testing.assert_close(loaded(pixels, patch_mask), source(pixels, patch_mask), atol=0, rtol=0)


def test_constructor_errors():
    with pytest.raises(ValueError, match="only VisionTransformer"):
        TimmVisionEncoder("eva02_tiny_patch14_224", model_kwargs={**TINY, "patch_size": 14, "img_size": 28})
    with pytest.raises(ValueError, match="Patch dropout"):
        TimmVisionEncoder("vit_tiny_patch16_224", model_kwargs={**TINY, "patch_drop_rate": 0.1})
    with pytest.raises(ValueError, match="feature_layer"):
        TimmVisionEncoder("vit_tiny_patch16_224", model_kwargs=TINY, feature_layer=-4)
    with pytest.raises(ValueError, match="position_embedding"):
        TimmVisionEncoder("vit_tiny_patch16_224", model_kwargs=TINY, position_embedding="rope")


def test_forward_errors(encoders):
    encoder = encoders["vit_tiny_patch16_224"]
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 20\)"):
        encoder(torch.zeros(2, 3, 32, 20))
    with pytest.raises(ValueError, match="shape"):
        encoder(torch.zeros(1, 3, 32, 32), torch.ones(1, 4, 5, dtype=torch.bool))
    stripes = torch.ones(1, 4, 4, dtype=torch.bool)
    stripes[0, :, 1] = False
    with pytest.raises(ValueError, match="top-left rectangle"):
        encoder(torch.zeros(1, 3, 32, 32), stripes)
