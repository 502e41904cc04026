import pytest
import torch
from transformers import Idefics3Config
from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector

from vlmkit.connectors import PixelShuffleConnector
from vlmkit.interfaces import Connector, GridConnector


def _reference(in_dim: int, out_dim: int, scale_factor: int) -> Idefics3Connector:
    config = Idefics3Config(
        vision_config={"hidden_size": in_dim, "num_attention_heads": 2},
        text_config={"model_type": "llama", "hidden_size": out_dim, "num_attention_heads": 2},
        scale_factor=scale_factor,
    )
    return Idefics3Connector(config)


@pytest.mark.parametrize(("side", "scale_factor"), [(4, 2), (6, 2), (6, 3), (9, 3), (8, 4)])
def test_equals_transformers_idefics3_connector(side, scale_factor):
    """Same weights, random square grids: Idefics3's pixel shuffle + modality projection, exactly."""
    torch.manual_seed(side * 10 + scale_factor)
    reference = _reference(12, 20, scale_factor)
    connector = PixelShuffleConnector(12, 20, scale_factor=scale_factor)
    connector.projection.load_state_dict(reference.modality_projection.proj.state_dict(), strict=True)
    features = torch.randn(3, side * side, 12)
    expected = reference(features)
    torch.testing.assert_close(connector(features), expected, rtol=0, atol=0)
    mask = torch.ones(3, side, side, dtype=torch.bool)  # an explicit full mask is the same grid
    torch.testing.assert_close(connector(features, mask), expected, rtol=0, atol=0)
    assert expected.shape[1] == connector.num_visual_tokens(side * side) == connector.num_grid_tokens(side, side)


def test_contracts_and_shapes():
    connector = PixelShuffleConnector(12, 20, scale_factor=2)
    assert isinstance(connector, Connector) and isinstance(connector, GridConnector)
    assert connector.projection.weight.shape == (20, 48)
    assert connector.num_grid_tokens(5, 3) == 6 and connector.num_grid_tokens(3, 5) == 6
    assert connector.num_grid_tokens(7, 1) == 4
    with pytest.raises(ValueError, match="no square grid"):
        connector.num_visual_tokens(15)


def test_each_token_concatenates_its_block_row_offset_major():
    connector = PixelShuffleConnector(1, 4, scale_factor=2)
    grid = torch.arange(16.0).reshape(1, 16, 1)  # a 4 x 4 grid of scalars, row-major
    with torch.no_grad():
        connector.projection.weight.copy_(torch.eye(4))  # the identity shows the shuffled features
    tokens = connector(grid)
    assert tokens[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_grid_not_divisible_is_completed_with_zero_patches():
    """A 5 x 3 grid with r = 2: tokens of a 6 x 4 grid whose added patches are zero, 3 x 2 tokens."""
    torch.manual_seed(0)
    connector = PixelShuffleConnector(6, 8, scale_factor=2)
    features = torch.randn(1, 15, 6)
    mask = torch.ones(1, 5, 3, dtype=torch.bool)
    padded = torch.zeros(1, 6, 4, 6)
    padded[:, :5, :3] = features.reshape(1, 5, 3, 6)
    expected = connector(padded.reshape(1, 24, 6), torch.ones(1, 6, 4, dtype=torch.bool))
    torch.testing.assert_close(connector(features, mask), expected)
    assert connector.num_grid_tokens(5, 3) == expected.shape[1] == 6


@pytest.mark.parametrize("projection", ["linear", "mlp"])
def test_images_of_any_aspect_give_their_own_tokens_in_a_padded_batch(projection):
    """Each image alone equals its real tokens inside a batch padded to the largest grid with garbage."""
    torch.manual_seed(1)
    connector = PixelShuffleConnector(6, 8, scale_factor=3, projection=projection, hidden_dim=16).eval()
    grids = [(7, 4), (3, 9), (9, 9), (2, 2)]
    rows, cols = 9, 9
    batch = torch.randn(len(grids), rows, cols, 6) * 100.0
    mask = torch.zeros(len(grids), rows, cols, dtype=torch.bool)
    alone = []
    for i, (h, w) in enumerate(grids):
        image = torch.randn(1, h, w, 6)
        batch[i, :h, :w] = image[0]
        mask[i, :h, :w] = True
        alone.append(connector(image.reshape(1, h * w, 6), torch.ones(1, h, w, dtype=torch.bool))[0])
    with torch.no_grad():
        tokens = connector(batch.reshape(len(grids), rows * cols, 6), mask)
    out_mask = connector.output_mask(mask)
    assert tokens.shape[:2] == out_mask.shape == (len(grids), 9)
    for i, (h, w) in enumerate(grids):
        assert int(out_mask[i].sum()) == connector.num_grid_tokens(h, w)
        torch.testing.assert_close(tokens[i][out_mask[i]], alone[i], rtol=1e-5, atol=1e-5)
    assert connector.output_mask(None) is None


def test_gradients_reach_the_projection():
    torch.manual_seed(0)
    connector = PixelShuffleConnector(6, 8, scale_factor=2, projection="mlp")
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0], mask[1, :2, :3] = True, True
    out = connector(torch.randn(2, 16, 6), mask)
    (out * torch.randn_like(out)).sum().backward()
    for name, param in connector.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="scale_factor"):
        PixelShuffleConnector(6, 8, scale_factor=0)
    with pytest.raises(ValueError, match="projection"):
        PixelShuffleConnector(6, 8, projection="perceiver")
    connector = PixelShuffleConnector(6, 8)
    with pytest.raises(ValueError, match="no square grid"):
        connector(torch.randn(1, 15, 6))
    with pytest.raises(ValueError, match=r"rows \* cols = 15"):
        connector(torch.randn(1, 15, 6), torch.ones(1, 15, dtype=torch.bool))


@pytest.mark.integration
def test_in_a_model_images_of_any_aspect_match_their_placeholders():
    """Composed with the tiny VLM: non-square, non-divisible grids, padded batch == each image alone."""
    import functools

    from tiny_models import build_tiny_vlm

    vlm = build_tiny_vlm(functools.partial(PixelShuffleConnector, scale_factor=2)).eval()
    patch = vlm.vision_encoder.patch_size
    sizes = [(24, 40), (40, 8), (16, 16)]  # 3 x 5, 5 x 1 and 2 x 2 patches
    assert [vlm.num_image_tokens(h, w) for h, w in sizes] == [6, 3, 1]
    torch.manual_seed(0)
    images = [torch.randn(3, h, w) for h, w in sizes]
    pixels = torch.zeros(3, 3, 40, 40)
    patch_mask = torch.zeros(3, 40 // patch, 40 // patch, dtype=torch.bool)
    for i, (image, (h, w)) in enumerate(zip(images, sizes)):
        pixels[i, :, :h, :w] = image
        patch_mask[i, : h // patch, : w // patch] = True
    with torch.no_grad():
        tokens, mask = vlm.encode_images(pixels, patch_mask)
        for i, image in enumerate(images):
            alone, _ = vlm.encode_images(image[None])
            torch.testing.assert_close(tokens[i][mask[i]], alone[0], rtol=1e-5, atol=1e-5)
    fake, image_id = vlm.tokenizer.convert_tokens_to_ids(["<fake_token_around_image>", "<image>"])
    ids = torch.tensor([[fake] + [image_id] * 10 + [fake]])
    assert vlm(ids, None, pixels, patch_mask).logits.shape[1] == 12
    with pytest.raises(ValueError, match="need 10 visual tokens"):
        vlm(ids[:, 2:], None, pixels, patch_mask)
