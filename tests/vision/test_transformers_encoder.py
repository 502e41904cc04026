"""Tests for TransformersVisionEncoder: reference outputs, padding invariance, Idefics2 golden checks, loading."""

from __future__ import annotations

import json

import pytest
import torch
from padded_images import padded_pair, real_patches
from transformers import AutoConfig, AutoModel, SiglipVisionModel
from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionEmbeddings, Idefics2VisionTransformer

from vlmkit.interfaces import VisionEncoder
from vlmkit.vision import TransformersVisionEncoder
from vlmkit.vision.transformers_encoder import bucket_position_ids, interpolate_positions

# pretrained grid 4 x 4 patches of 8 px
TOWER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
TEXT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64}
TOWER_TYPES = ["siglip_vision_model", "clip_vision_model", "idefics2_vision"]
ATOL = 1e-5


def build(model_type: str, **kwargs) -> TransformersVisionEncoder:
    torch.manual_seed(0)
    return TransformersVisionEncoder(config={"model_type": model_type, **TOWER}, **kwargs).eval()


@pytest.fixture(scope="module")
def encoders() -> dict[tuple[str, str], TransformersVisionEncoder]:
    """One tiny encoder per (model type, attention implementation)."""
    return {(t, impl): build(t, attn_implementation=impl) for t in TOWER_TYPES for impl in ("eager", "sdpa")}


def backbone_features(encoder: TransformersVisionEncoder, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
    """The backbone's own last hidden state after post-layernorm, patch tokens only."""
    backbone = encoder.backbone
    hidden = backbone(pixel_values, **kwargs).last_hidden_state
    if encoder.model_type == "clip_vision_model":  # CLIP leaves post_layernorm to the pooled CLS only
        return backbone.post_layernorm(hidden)[:, 1:]
    return hidden


@torch.no_grad()
@pytest.mark.parametrize("model_type", TOWER_TYPES)
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_matches_backbone_at_pretrained_size(encoders, model_type, impl):
    encoder = encoders[model_type, impl]
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    features = encoder(pixels)
    assert features.shape == (2, 16, 32)
    torch.testing.assert_close(features, backbone_features(encoder, pixels), atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("model_type", ["siglip_vision_model", "clip_vision_model"])
def test_interpolate_matches_backbone_interpolation_off_size(encoders, model_type):
    encoder = encoders[model_type, "eager"]
    pixels = torch.randn(1, 3, 24, 40, generator=torch.Generator().manual_seed(0))  # 3 x 5 patches
    expected = backbone_features(encoder, pixels, interpolate_pos_encoding=True)
    torch.testing.assert_close(encoder(pixels), expected, atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("model_type", TOWER_TYPES)
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", ["interpolate", "bucket"])
def test_padding_invariance(model_type, impl, mode):
    encoder = build(model_type, attn_implementation=impl, position_embedding=mode)
    pixels, patch_mask, first, second = padded_pair()
    batched = encoder(pixels, patch_mask)
    assert batched.shape == (2, 25, 32) and batched.isfinite().all()
    torch.testing.assert_close(real_patches(batched[0], 3, 5), encoder(first)[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(real_patches(batched[1], 5, 2), encoder(second)[0], atol=ATOL, rtol=0)


@torch.no_grad()
def test_padding_content_does_not_leak(encoders):
    encoder = encoders["siglip_vision_model", "sdpa"]
    pixels, patch_mask, _, _ = padded_pair()
    noisy = pixels.clone()
    noisy[0, :, 24:] = 100.0  # garbage in the padding of image 0
    real = patch_mask.flatten(1)
    torch.testing.assert_close(encoder(noisy, patch_mask)[real], encoder(pixels, patch_mask)[real], atol=ATOL, rtol=0)


@torch.no_grad()
def test_interpolate_is_identity_at_pretrained_size(encoders):
    encoder = encoders["siglip_vision_model", "eager"]
    table = encoder.backbone.embeddings.position_embedding.weight  # [16, d]
    grid = table.reshape(4, 4, -1)
    assert torch.equal(interpolate_positions(grid, 4, 4), grid)
    # in a padded batch too: the image at the pretrained size gets the table unchanged
    sizes = torch.tensor([[4, 4], [2, 3]])
    positions = encoder._patch_positions(sizes, rows=4, cols=4)
    assert torch.equal(positions[0], table)
    assert not torch.equal(real_patches(positions[1], 2, 3, grid_cols=4), table[:6])


def test_bucket_ids_match_idefics2_embeddings():
    """Read Idefics2VisionEmbeddings' position ids back by zeroing the patch embedding and encoding ids in weights."""
    for side in (4, 7):
        config = AutoConfig.for_model("idefics2_vision", **{**TOWER, "image_size": 8 * side})
        embeddings = Idefics2VisionEmbeddings(config)
        with torch.no_grad():
            embeddings.patch_embedding.weight.zero_()
            embeddings.patch_embedding.bias.zero_()
            embeddings.position_embedding.weight.zero_()
            embeddings.position_embedding.weight[:, 0] = torch.arange(side * side, dtype=torch.float32)
        sizes = torch.tensor([(h, w) for h in range(1, 12) for w in range(1, 12)])
        patch_mask = (torch.arange(11)[None, :, None] < sizes[:, 0, None, None]) & (
            torch.arange(11)[None, None, :] < sizes[:, 1, None, None]
        )
        with torch.no_grad():
            expected = embeddings(torch.zeros(len(sizes), 3, 88, 88), patch_mask)[..., 0].long()  # [n, 121]
        assert torch.equal(bucket_position_ids(sizes, 11, 11, side), expected)


@torch.no_grad()
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_bucket_mode_matches_idefics2_tower_with_siglip_weights(encoders, impl):
    """SigLIP and Idefics2 vision towers share architecture: copy weights, compare on a padded non-square batch."""
    encoder = build("siglip_vision_model", attn_implementation=impl, position_embedding="bucket")
    idefics2 = Idefics2VisionTransformer(AutoConfig.for_model("idefics2_vision", **TOWER)).eval()
    result = idefics2.load_state_dict(encoder.backbone.state_dict(), strict=False)
    assert not result.missing_keys and all(key.startswith("head.") for key in result.unexpected_keys)

    pixels, patch_mask, _, _ = padded_pair()
    expected = idefics2(pixels, patch_attention_mask=patch_mask).last_hidden_state
    real = patch_mask.flatten(1)
    torch.testing.assert_close(encoder(pixels, patch_mask)[real], expected[real], atol=ATOL, rtol=0)


@torch.no_grad()
def test_idefics2_tower_matches_its_native_masked_forward(encoders):
    encoder = encoders["idefics2_vision", "sdpa"]
    assert encoder.position_embedding == "bucket"  # the family's own scheme by default
    pixels, patch_mask, _, _ = padded_pair()
    expected = encoder.backbone(pixels, patch_attention_mask=patch_mask).last_hidden_state
    real = patch_mask.flatten(1)
    torch.testing.assert_close(encoder(pixels, patch_mask)[real], expected[real], atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("model_type", TOWER_TYPES)
@pytest.mark.parametrize("feature_layer", [0, -2])
def test_feature_layer_selects_hidden_state_without_post_norm(model_type, feature_layer):
    encoder = build(model_type, feature_layer=feature_layer)
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    hidden_states = encoder.backbone(pixels, output_hidden_states=True).hidden_states
    expected = hidden_states[feature_layer][:, encoder.num_prefix_tokens :]
    torch.testing.assert_close(encoder(pixels), expected, atol=ATOL, rtol=0)


def test_block_class_protocol_and_normalisation(encoders):
    siglip, clip = encoders["siglip_vision_model", "eager"], encoders["clip_vision_model", "eager"]
    assert isinstance(siglip, VisionEncoder)
    assert (siglip.hidden_size, siglip.patch_size) == (32, 8)
    assert siglip.block_class.__name__ == "SiglipEncoderLayer"
    assert clip.block_class.__name__ == "CLIPEncoderLayer"
    assert encoders["idefics2_vision", "eager"].block_class.__name__ == "Idefics2EncoderLayer"
    assert siglip.image_mean == (0.5, 0.5, 0.5) and siglip.image_std == (0.5, 0.5, 0.5)
    assert clip.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_bfloat16_and_gradients():
    encoder = build("siglip_vision_model", torch_dtype="bfloat16")
    assert encoder.backbone.embeddings.patch_embedding.weight.dtype == torch.bfloat16
    pixels, patch_mask, _, _ = padded_pair()
    features = encoder(pixels, patch_mask)
    assert features.dtype == torch.bfloat16
    features[patch_mask.flatten(1)].float().sum().backward()
    assert encoder.backbone.embeddings.position_embedding.weight.grad is not None


def test_full_model_config_builds_its_vision_tower():
    torch.manual_seed(0)
    encoder = TransformersVisionEncoder(config={"model_type": "siglip", "vision_config": TOWER})
    assert isinstance(encoder.backbone, SiglipVisionModel) and encoder.hidden_size == 32


def test_gradient_checkpointing_of_backbone_layers():
    encoder = build("clip_vision_model").train()
    encoder.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    pixels, patch_mask, _, _ = padded_pair()
    encoder(pixels, patch_mask)[patch_mask.flatten(1)].sum().backward()
    assert encoder.backbone.encoder.layers[0].gradient_checkpointing
    assert encoder.backbone.embeddings.patch_embedding.weight.grad.abs().sum() > 0


@torch.no_grad()
def test_load_tower_from_path(tmp_path, encoders):
    encoder = encoders["siglip_vision_model", "sdpa"]
    encoder.backbone.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3]}))
    loaded = TransformersVisionEncoder(name_or_path=str(tmp_path)).eval()
    assert isinstance(loaded.backbone, SiglipVisionModel)
    assert loaded.image_mean == (0.1, 0.2, 0.3) and loaded.image_std == (0.5, 0.5, 0.5)
    pixels, patch_mask, _, _ = padded_pair()
    torch.testing.assert_close(loaded(pixels, patch_mask), encoder(pixels, patch_mask), atol=ATOL, rtol=0)


def test_a_tower_loaded_by_path_starts_in_train_mode(tmp_path, encoders):
    # from_pretrained returns eval mode; Lightning's fit keeps it, so dropout would be off while training.
    encoders["siglip_vision_model", "sdpa"].backbone.save_pretrained(tmp_path)
    loaded = TransformersVisionEncoder(name_or_path=str(tmp_path))
    assert [name for name, module in loaded.named_modules() if not module.training] == []


@torch.no_grad()
@pytest.mark.parametrize("model_type", ["siglip", "clip"])
def test_load_vision_tower_of_full_checkpoint(tmp_path, model_type):
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vision_config=TOWER, text_config={**TEXT, "vocab_size": 64})
    full = AutoModel.from_config(config).eval()
    full.save_pretrained(tmp_path)
    loaded = TransformersVisionEncoder(name_or_path=str(tmp_path)).eval()
    assert loaded.model_type == model_type
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    hidden = full.vision_model(pixels).last_hidden_state
    expected = full.vision_model.post_layernorm(hidden)[:, 1:] if model_type == "clip" else hidden
    torch.testing.assert_close(loaded(pixels), expected, atol=ATOL, rtol=0)


@torch.no_grad()
def test_load_idefics2_tower_from_path(tmp_path, encoders):
    encoder = encoders["idefics2_vision", "eager"]
    encoder.backbone.save_pretrained(tmp_path)
    loaded = TransformersVisionEncoder(name_or_path=str(tmp_path), attn_implementation="eager").eval()
    pixels, patch_mask, _, _ = padded_pair()
    torch.testing.assert_close(loaded(pixels, patch_mask), encoder(pixels, patch_mask), atol=ATOL, rtol=0)


def test_constructor_errors():
    with pytest.raises(ValueError, match="exactly one"):
        TransformersVisionEncoder()
    with pytest.raises(ValueError, match="exactly one"):
        TransformersVisionEncoder(name_or_path="x", config={"model_type": "siglip_vision_model"})
    with pytest.raises(ValueError, match=r"Unsupported vision model_type 'vit'.*siglip_vision_model"):
        TransformersVisionEncoder(config={"model_type": "vit"})
    with pytest.raises(ValueError, match="position_embedding"):
        TransformersVisionEncoder(config={"model_type": "siglip_vision_model", **TOWER}, position_embedding="rope")
    with pytest.raises(ValueError, match="feature_layer"):
        TransformersVisionEncoder(config={"model_type": "siglip_vision_model", **TOWER}, feature_layer=3)
    with pytest.raises(ValueError, match="torch_dtype"):
        TransformersVisionEncoder(config={"model_type": "siglip_vision_model", **TOWER}, torch_dtype="floaty")


def test_forward_errors(encoders):
    encoder = encoders["siglip_vision_model", "eager"]
    with pytest.raises(ValueError, match=r"\(1, 3, 30, 32\)"):
        encoder(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match="shape"):
        encoder(torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 4, dtype=torch.bool))
    holes = torch.ones(1, 4, 4, dtype=torch.bool)
    holes[0, 0, 0] = False
    with pytest.raises(ValueError, match="top-left rectangle"):
        encoder(torch.zeros(1, 3, 32, 32), holes)


def test_siglip_pooling_head_is_dropped_and_old_state_dicts_still_load():
    from tiny_models import TINY_SIGLIP
    from transformers import SiglipVisionConfig, SiglipVisionModel

    encoder = TransformersVisionEncoder(config=TINY_SIGLIP)
    assert not any(".head." in k or k.startswith("backbone.head") for k in encoder.state_dict())
    config = SiglipVisionConfig(**{k: v for k, v in TINY_SIGLIP.items() if k != "model_type"})
    with_head = {f"backbone.{k}": v for k, v in SiglipVisionModel(config).state_dict().items()}
    assert any(k.startswith("backbone.head.") for k in with_head)
    encoder.load_state_dict(with_head)  # strict: the head's keys are dropped, every other key must match
    key = "backbone.post_layernorm.weight"
    assert torch.equal(encoder.state_dict()[key], with_head[key])
