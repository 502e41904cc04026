import pytest
import torch
from transformers.models.idefics2.modeling_idefics2 import Idefics2MLP

from vlmkit.connectors import MLPProjection
from vlmkit.interfaces import Connector


@pytest.mark.parametrize("gated", [True, False])
def test_shapes_and_token_counts(gated):
    proj = MLPProjection(12, 16, hidden_dim=20, gated=gated)
    assert isinstance(proj, Connector)
    assert (proj.in_dim, proj.out_dim) == (12, 16)
    assert proj(torch.randn(3, 7, 12)).shape == (3, 7, 16)
    assert proj.num_visual_tokens(7) == 7
    mask = torch.rand(3, 7) > 0.5
    assert proj.output_mask(mask) is mask
    assert proj.output_mask(None) is None


def test_default_hidden_dim_and_layer_names():
    assert MLPProjection(12, 16).gate_proj.out_features == 64
    assert set(MLPProjection(12, 16).state_dict()) == {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}
    assert set(MLPProjection(12, 16, gated=False).state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def test_matches_idefics2_mlp():
    torch.manual_seed(0)
    reference = Idefics2MLP(hidden_size=12, intermediate_size=20, output_size=16, hidden_act="silu")
    proj = MLPProjection(12, 16, hidden_dim=20, activation="silu")
    proj.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 5, 12)
    torch.testing.assert_close(proj(x), reference(x), rtol=0, atol=1e-6)


def test_llava_form_is_linear_act_linear():
    torch.manual_seed(0)
    proj = MLPProjection(12, 16, hidden_dim=20, activation="gelu", gated=False)
    x = torch.randn(2, 5, 12)
    expected = proj.fc2(torch.nn.functional.gelu(proj.fc1(x)))
    torch.testing.assert_close(proj(x), expected)


@pytest.mark.parametrize("gated", [True, False])
def test_padding_has_no_effect(gated, padding_has_no_effect):
    torch.manual_seed(0)
    padding_has_no_effect(MLPProjection(12, 16, hidden_dim=20, gated=gated), 12, real=(3, 5, 8), padded_to=8)


@pytest.mark.parametrize("gated", [True, False])
def test_gradients_reach_every_parameter(gated, gradients_reach_every_parameter):
    torch.manual_seed(0)
    gradients_reach_every_parameter(MLPProjection(12, 16, hidden_dim=20, gated=gated), 12)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="activation"):
        MLPProjection(12, 16, activation="nope")
    with pytest.raises(ValueError, match="hidden_dim"):
        MLPProjection(12, 16, hidden_dim=0)
    with pytest.raises(ValueError, match="out_dim"):
        MLPProjection(12, 0)
