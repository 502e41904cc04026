"""Shared checks for the connector tests: padding invariance and gradient flow."""

import pytest
import torch
from torch import nn


def _padding_has_no_effect(connector: nn.Module, in_dim: int, real: tuple[int, ...], padded_to: int) -> None:
    """Each image alone (unpadded) gives the same real tokens as inside a padded batch with garbage padding."""
    torch.manual_seed(0)
    connector.eval()
    images = [torch.randn(1, p, in_dim) for p in real]
    batch = torch.randn(len(real), padded_to, in_dim) * 100.0  # garbage in the padding
    mask = torch.zeros(len(real), padded_to, dtype=torch.bool)
    for i, (image, p) in enumerate(zip(images, real)):
        batch[i, :p] = image[0]
        mask[i, :p] = True
    with torch.no_grad():
        batched = connector(batch, mask)
        out_mask = connector.output_mask(mask)
        assert batched.shape[:2] == (len(real), connector.num_visual_tokens(padded_to))
        for i, (image, p) in enumerate(zip(images, real)):
            alone = connector(image)
            assert alone.shape[1] == connector.num_visual_tokens(p)
            got = batched[i] if out_mask is None else batched[i][out_mask[i]]
            torch.testing.assert_close(got, alone[0], rtol=1e-5, atol=1e-5)


def _gradients_reach_every_parameter(connector: nn.Module, in_dim: int, p: int = 6) -> None:
    torch.manual_seed(0)
    connector.train()
    features = torch.randn(2, p, in_dim)
    mask = torch.ones(2, p, dtype=torch.bool)
    mask[1, p // 2 :] = False
    out = connector(features, mask)
    (out * torch.randn_like(out)).sum().backward()
    for name, param in connector.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


@pytest.fixture
def padding_has_no_effect():
    return _padding_has_no_effect


@pytest.fixture
def gradients_reach_every_parameter():
    return _gradients_reach_every_parameter
