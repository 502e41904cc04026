import pytest
import torch

from vlmkit.connectors import LinearProjection
from vlmkit.interfaces import Connector


def test_shapes_and_token_counts():
    proj = LinearProjection(12, 16, num_patches=9, num_tokens=4)
    assert isinstance(proj, Connector)
    assert (proj.in_dim, proj.out_dim) == (12, 16)
    assert proj(torch.randn(3, 9, 12)).shape == (3, 4, 16)
    assert proj(torch.randn(3, 5, 12)).shape == (3, 4, 16)
    assert proj.num_visual_tokens(9) == proj.num_visual_tokens(1) == 4
    assert proj.output_mask(torch.ones(3, 9, dtype=torch.bool)) is None


def test_equals_dense_linear_with_kronecker_weight():
    """The factorised layer is a dense linear on the flattened sequence with weight S ⊗ F."""
    torch.manual_seed(0)
    proj = LinearProjection(3, 5, num_patches=4, num_tokens=2)
    torch.nn.init.normal_(proj.bias)
    x = torch.randn(2, 4, 3)
    weight = torch.kron(proj.sequence_proj.weight, proj.feature_proj.weight)  # [2 * 5, 4 * 3]
    dense = x.flatten(1) @ weight.T + proj.bias.flatten()
    torch.testing.assert_close(proj(x), dense.view(2, 2, 5))


def test_padding_has_no_effect(padding_has_no_effect):
    torch.manual_seed(0)
    proj = LinearProjection(12, 16, num_patches=10, num_tokens=4)
    padding_has_no_effect(proj, 12, real=(3, 6, 8), padded_to=8)


def test_gradients_reach_every_parameter(gradients_reach_every_parameter):
    torch.manual_seed(0)
    gradients_reach_every_parameter(LinearProjection(12, 16, num_patches=8, num_tokens=4), 12)


def test_too_many_patches_raises_naming_both_counts():
    proj = LinearProjection(12, 16, num_patches=9, num_tokens=4)
    with pytest.raises(ValueError, match=r"10 patches.*num_patches=9"):
        proj(torch.randn(1, 10, 12))
    with pytest.raises(ValueError, match=r"10 patches.*num_patches=9"):
        proj.num_visual_tokens(10)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_tokens"):
        LinearProjection(12, 16, num_tokens=0)
    with pytest.raises(ValueError, match="num_patches"):
        LinearProjection(12, 16, num_patches=-1)
