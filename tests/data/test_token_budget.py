from vlmkit.data.token_budget import main, token_budget


def test_idefics2_budget_64_and_320_tokens():
    budget = token_budget(384, 384, 14, lambda p: 64, 980, 378)
    assert budget.processed_size == (378, 378) and budget.encoder_patches == 729 and budget.visual_tokens == 64
    split = token_budget(384, 384, 14, lambda p: 64, 980, 378, split_images=True)
    assert split.views == 5 and split.encoder_patches == 5 * 729 and split.visual_tokens == 320


def test_budget_follows_the_aspect_ratio_and_token_per_patch_connectors():
    budget = token_budget(2200, 1700, 14, lambda p: p, 980, 378)
    assert budget.processed_size == (980, 756)
    assert budget.visual_tokens == budget.encoder_patches == (980 // 14) * (756 // 14)


def test_model_budget_matches_its_processor(tiny_vlm):
    from PIL import Image

    from vlmkit.data import VLMProcessor
    from vlmkit.text import Turn

    processor = VLMProcessor.from_model(tiny_vlm, max_image_size=40, min_image_size=16)
    for split_images in (False, True):
        item = processor(
            [Image.new("RGB", (37, 21))], [Turn("user", [{"type": "image"}, "Q?"])], split_images=split_images
        )
        budget = tiny_vlm.token_budget(21, 37, max_image_size=40, min_image_size=16, split_images=split_images)
        assert int((item["input_ids"] == tiny_vlm.image_token_id).sum()) == budget.visual_tokens
        assert len(item["pixel_values"]) == budget.views
        assert sum(p.shape[1] * p.shape[2] // 64 for p in item["pixel_values"]) == budget.encoder_patches


def test_cli_prints_a_table(capsys):
    main(["--sizes", "384x384", "980x740"])
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| 384x384 | 378x378 | 729 | 64 | 3,645 | 320 |")
    assert len(out) == 4


def test_the_old_argument_name_still_works_with_a_warning(tiny_vlm):
    import pytest

    with pytest.warns(FutureWarning, match=r"token_budget\(split=...\) is now token_budget\(split_images=...\)"):
        assert token_budget(384, 384, 14, lambda p: 64, 980, 378, split=True).views == 5
    with pytest.warns(FutureWarning, match="split_images"):
        assert tiny_vlm.token_budget(21, 37, 40, 16, split=True).views == 5


def test_smolvlm_tiling_budget():
    """SmolVLM-256M: 512 px tiles of 32 x 32 patches, pixel shuffle 4 -> 64 tokens per view, longest side 2048."""
    per_view = 64

    def shuffled(rows, cols):
        return -(-rows // 4) * -(-cols // 4)

    one = token_budget(480, 640, 16, None, 2048, split_images=False, tile_size=512, tokens_for_grid=shuffled)
    assert one.processed_size == (512, 512) and one.views == 1 and one.visual_tokens == per_view
    tiled = token_budget(480, 640, 16, None, 2048, split_images=True, tile_size=512, tokens_for_grid=shuffled)
    assert tiled.grid == (3, 4) and tiled.views == 13  # scaled up to 2048 x 1536: 4 x 3 tiles + the image
    assert tiled.encoder_patches == 13 * 1024 and tiled.visual_tokens == 13 * per_view


def test_model_budget_matches_its_tiling_processor():
    import functools

    from PIL import Image
    from tiny_models import build_tiny_vlm

    from vlmkit.connectors import PixelShuffleConnector
    from vlmkit.data import VLMProcessor
    from vlmkit.text import Turn

    vlm = build_tiny_vlm(functools.partial(PixelShuffleConnector, scale_factor=3), tile_size=24)
    processor = VLMProcessor.from_model(vlm, max_image_size=60)
    for size, split_images in [((37, 21), False), ((37, 21), True), ((13, 50), True), ((9, 9), True)]:
        turns = [Turn("user", [{"type": "image"}, "Q?"])]
        item = processor([Image.new("RGB", size)], turns, split_images=split_images)
        budget = vlm.token_budget(size[1], size[0], max_image_size=60, split_images=split_images)
        assert int((item["input_ids"] == vlm.image_token_id).sum()) == budget.visual_tokens
        assert len(item["pixel_values"]) == budget.views
        assert all(p.shape[1:] == (24, 24) for p in item["pixel_values"])


def test_cli_prints_the_tiled_table(capsys):
    main(["--patch-size", "16", "--tile-size", "512", "--max-image-size", "2048", "--pixel-shuffle", "4",
          "--sizes", "640x480", "300x2000"])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "| 640x480 | 512x512 | 1,024 | 64 | 4 x 3 + 1 | 13,312 | 832 |"
    assert out[3].startswith("| 300x2000 | 512x512 | 1,024 | 64 | 1 x 4 + 1 |")
