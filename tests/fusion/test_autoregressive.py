import pytest
import torch

from vlmkit.fusion import FullyAutoregressiveFusion


class RecordingLM:
    hidden_size = 4

    def __call__(self, inputs_embeds, **kwargs):
        self.inputs_embeds, self.kwargs = inputs_embeds, kwargs
        return inputs_embeds


def test_visual_tokens_fill_placeholders_in_reading_order():
    fusion, lm = FullyAutoregressiveFusion(), RecordingLM()
    embeds = torch.zeros(2, 4, 4)
    placeholders = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    visual = torch.arange(2 * 3 * 4, dtype=torch.float).view(2, 3, 4)  # 2 images x 3 tokens
    visual_mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)  # third token of each is padding
    out = fusion(lm, embeds, placeholders, visual, visual_mask, attention_mask="kept")
    assert torch.equal(out[0, 1], visual[0, 0]) and torch.equal(out[0, 2], visual[0, 1])
    assert torch.equal(out[1, 0], visual[1, 0]) and torch.equal(out[1, 3], visual[1, 1])
    assert out[0, 0].abs().sum() == 0 and out[1, 1].abs().sum() == 0  # text untouched
    assert lm.kwargs == {"attention_mask": "kept"}


def test_count_mismatch_names_both_counts():
    fusion = FullyAutoregressiveFusion()
    placeholders = torch.tensor([[1, 1, 1]], dtype=torch.bool)
    with pytest.raises(ValueError, match="3 image placeholder tokens but the images produced 2 visual tokens"):
        fusion(RecordingLM(), torch.zeros(1, 3, 4), placeholders, torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="3 image placeholder tokens but the images produced 0"):
        fusion(RecordingLM(), torch.zeros(1, 3, 4), placeholders, None)


def test_bind_checks_widths_and_one_placeholder_per_token():
    fusion = FullyAutoregressiveFusion()
    assert fusion.tokens_per_image(64) == 64
    fusion.bind(RecordingLM(), 4)
    with pytest.raises(ValueError, match="out_dim=8, language model hidden_size=4"):
        fusion.bind(RecordingLM(), 8)
