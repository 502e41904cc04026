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
