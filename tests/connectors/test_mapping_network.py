import pytest
import torch

from vlmkit.connectors import MappingNetwork
from vlmkit.interfaces import Connector

TINY = dict(num_tokens=4, hidden_dim=16, depth=2, num_heads=4)


def test_shapes_and_token_counts():
    torch.manual_seed(0)
    net = MappingNetwork(12, 20, **TINY)
    assert isinstance(net, Connector)
    assert (net.in_dim, net.out_dim) == (12, 20)
    assert net(torch.randn(3, 7, 12)).shape == (3, 4, 20)
    assert net(torch.randn(3, 7, 12), torch.ones(3, 7, dtype=torch.bool)).shape == (3, 4, 20)
    assert net.num_visual_tokens(7) == net.num_visual_tokens(100) == 4
    assert net.output_mask(torch.ones(3, 7, dtype=torch.bool)) is None


def test_padding_has_no_effect(padding_has_no_effect):
    torch.manual_seed(0)
    padding_has_no_effect(MappingNetwork(12, 20, **TINY), 12, real=(3, 5, 8), padded_to=11)


def test_padding_has_no_effect_with_grad_enabled():
    """Training-mode path (no fused fast path) masks padding too."""
    torch.manual_seed(0)
    net = MappingNetwork(12, 20, **TINY).train()
    image = torch.randn(1, 3, 12)
    batch = torch.cat([image, torch.randn(1, 4, 12)], dim=1)
    mask = torch.tensor([[True] * 3 + [False] * 4])
    torch.testing.assert_close(net(batch, mask), net(image), rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter(gradients_reach_every_parameter):
    torch.manual_seed(0)
    gradients_reach_every_parameter(MappingNetwork(12, 20, **TINY), 12)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_heads=5 must divide hidden_dim=16"):
        MappingNetwork(12, 20, hidden_dim=16, num_heads=5)
    with pytest.raises(ValueError, match="dropout"):
        MappingNetwork(12, 20, dropout=1.0)
    with pytest.raises(ValueError, match="depth"):
        MappingNetwork(12, 20, depth=0)
