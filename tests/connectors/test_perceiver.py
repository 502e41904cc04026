import pytest
import torch
from transformers.models.idefics2.configuration_idefics2 import Idefics2Config
from transformers.models.idefics2.modeling_idefics2 import Idefics2Connector

from vlmkit.connectors import PerceiverResampler, idefics2_connector_state_dict
from vlmkit.interfaces import Connector

TINY = dict(num_latents=8, depth=2, num_heads=4, head_dim=16, num_key_value_heads=2)


def _idefics2_connector(attn_implementation: str) -> Idefics2Connector:
    config = Idefics2Config(
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4),
        text_config=dict(
            model_type="mistral",
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
        ),
        perceiver_config=dict(
            hidden_size=64,
            rms_norm_eps=1e-5,
            resampler_n_latents=8,
            resampler_depth=2,
            resampler_n_heads=4,
            resampler_head_dim=16,
            num_key_value_heads=2,
        ),
    )
    config.perceiver_config._attn_implementation = attn_implementation
    connector = Idefics2Connector(config).eval()
    with torch.no_grad():  # random weights everywhere, norms and latents included
        for param in connector.parameters():
            param.copy_(torch.randn_like(param) * (0.5 if param.ndim == 1 else param.shape[-1] ** -0.5))
    return connector


def test_shapes_and_token_counts():
    torch.manual_seed(0)
    resampler = PerceiverResampler(12, 64, **TINY)
    assert isinstance(resampler, Connector)
    assert (resampler.in_dim, resampler.out_dim) == (12, 64)
    assert resampler(torch.randn(3, 7, 12)).shape == (3, 8, 64)
    assert resampler(torch.randn(3, 7, 12), torch.ones(3, 7, dtype=torch.bool)).shape == (3, 8, 64)
    assert resampler.num_visual_tokens(7) == resampler.num_visual_tokens(729) == 8
    assert resampler.output_mask(torch.ones(3, 7, dtype=torch.bool)) is None


def test_without_projection_context_keeps_in_dim():
    resampler = PerceiverResampler(12, 64, projection=False, **TINY)
    assert resampler.modality_projection is None
    layer = resampler.layers[0]
    assert layer.input_context_norm.weight.shape == (12,)
    assert layer.self_attn.k_proj.in_features == layer.self_attn.v_proj.in_features == 12
    assert resampler(torch.randn(2, 5, 12)).shape == (2, 8, 64)
    same_width = PerceiverResampler(64, 64, projection=False, **TINY)
    assert same_width.layers[0].self_attn.k_latents_proj is None


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_matches_idefics2_connector(attn_implementation):
    """Golden check against transformers' Idefics2Connector (modality MLP + perceiver resampler)."""
    torch.manual_seed(0)
    reference = _idefics2_connector(attn_implementation)
    resampler = PerceiverResampler(
        48, 64, projection_hidden_dim=128, rms_norm_eps=1e-5, activation="silu", **TINY
    ).eval()
    resampler.load_state_dict(idefics2_connector_state_dict(reference.state_dict()), strict=True)

    features = torch.randn(3, 10, 48)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    for i, p in enumerate((10, 6, 3)):
        mask[i, :p] = True
    with torch.no_grad():
        expected = reference(features, attention_mask=mask)
        got = resampler(features, mask)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_state_dict_helper_strips_full_model_prefix():
    state = {
        "model.connector.perceiver_resampler.latents": 1,
        "model.connector.modality_projection.up_proj.weight": 2,
        "model.text_model.x": 3,
    }
    assert idefics2_connector_state_dict(state, prefix="model.connector.") == {
        "latents": 1,
        "modality_projection.up_proj.weight": 2,
    }


@pytest.mark.parametrize("projection", [True, False])
def test_padding_has_no_effect(projection, padding_has_no_effect):
    torch.manual_seed(0)
    padding_has_no_effect(PerceiverResampler(12, 64, projection=projection, **TINY), 12, real=(3, 5, 8), padded_to=11)


@pytest.mark.parametrize("projection", [True, False])
def test_gradients_reach_every_parameter(projection, gradients_reach_every_parameter):
    torch.manual_seed(0)
    gradients_reach_every_parameter(PerceiverResampler(12, 64, projection=projection, **TINY), 12)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_key_value_heads=3 must divide num_heads=4"):
        PerceiverResampler(12, 64, num_heads=4, num_key_value_heads=3)
    with pytest.raises(ValueError, match="num_latents"):
        PerceiverResampler(12, 64, num_latents=0)
    with pytest.raises(ValueError, match="activation"):
        PerceiverResampler(12, 64, activation="nope", **TINY)


def test_masked_attention_expands_kv_heads_so_sdpa_keeps_its_efficient_kernels(monkeypatch):
    """With a mask, ``enable_gqa`` sends SDPA to its math kernel: the KV heads are repeated instead (same numbers)."""
    import torch.nn.functional as F

    calls = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        calls.append((q.shape[1], k.shape[1], kwargs.get("attn_mask") is not None, kwargs.get("enable_gqa", False)))
        return sdpa(q, k, v, **kwargs)

    torch.manual_seed(0)
    resampler = PerceiverResampler(12, 64, **TINY).eval()
    features = torch.randn(2, 7, 12)
    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    with torch.no_grad():
        masked = resampler(features, torch.ones(2, 7, dtype=torch.bool))
        assert calls and all(c == (4, 4, True, False) for c in calls)  # 4 query heads, 4 (repeated) KV heads
        calls.clear()
        unmasked = resampler(features)
        assert calls and all(c == (4, 2, False, True) for c in calls)  # no mask: native GQA (flash kernel)
    torch.testing.assert_close(masked, unmasked, rtol=0, atol=1e-6)
