import pytest
import torch
import torch.nn.functional as F
import transformers.utils
from tiny_models import TINY_LM, TINY_SIGLIP

from vlmkit.attention import SEGMENT_SDPA, segment_lengths


def test_flash_attention_falls_back_to_sdpa_with_a_warning_only_when_it_cannot_run(monkeypatch):
    from vlmkit.attention import attention_implementation

    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    with pytest.warns(UserWarning, match=r"attn_implementation='flash_attention_2' needs the flash-attn"):
        assert attention_implementation("flash_attention_2", "language_model.attn_implementation") == "sdpa"
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
    assert attention_implementation("flash_attention_2") == "flash_attention_2"
    for name in ("sdpa", "eager", None):
        assert attention_implementation(name) == name


def test_parts_asking_for_flash_attention_load_with_sdpa_where_flash_attn_is_missing(monkeypatch):
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.vision import TransformersVisionEncoder

    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    with pytest.warns(UserWarning, match="language_model.attn_implementation='flash_attention_2'"):
        lm = TransformersCausalLM(config=TINY_LM, tokenizer="synthetic", attn_implementation="flash_attention_2")
    assert lm.model.config._attn_implementation == SEGMENT_SDPA  # vlmkit's sdpa
    with pytest.warns(UserWarning, match="vision_encoder.attn_implementation='flash_attention_2'"):
        encoder = TransformersVisionEncoder(config=TINY_SIGLIP, attn_implementation="flash_attention_2")
    assert encoder.backbone.config._attn_implementation == SEGMENT_SDPA


def test_segment_lengths_are_the_runs_of_each_row():
    segments = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 1, 1, 1, 1, 1]])
    assert segment_lengths(segments) == [[3, 2, 1], [1, 5]]


class _QueryLengths:
    """Records the query length of every ``F.scaled_dot_product_attention`` call."""

    def __init__(self, monkeypatch):
        self.lengths: list[int] = []
        original = F.scaled_dot_product_attention

        def spy(query, *args, **kwargs):
            self.lengths.append(query.shape[-2])
            return original(query, *args, **kwargs)

        monkeypatch.setattr(F, "scaled_dot_product_attention", spy)


def _dense_only(monkeypatch, module):
    """Make ``module`` pass plain block-diagonal masks (no segments): the reference path."""
    monkeypatch.setattr(module, "with_segments", lambda mask, lengths: mask)


def test_packed_rows_attend_per_sample_with_the_dense_mask_s_logits_and_gradients(monkeypatch):
    import vlmkit.llm.transformers_lm as transformers_lm
    from vlmkit.llm import TransformersCausalLM

    torch.manual_seed(0)
    lm = TransformersCausalLM(config=TINY_LM, tokenizer="synthetic")  # sdpa by default
    segments = torch.tensor([[0] * 5 + [1] * 9 + [2] * 3 + [-1] * 3, [0] * 12 + [1] * 8])  # [2, 20]
    positions = torch.cat([torch.arange(n) for n in (5, 9, 3, 3, 12, 8)]).reshape(2, 20)
    embeds = torch.randn(2, 20, TINY_LM["hidden_size"])

    def run():
        x = embeds.clone().requires_grad_()
        lm.zero_grad()
        logits = lm(x, position_ids=positions, segment_ids=segments).logits
        logits.square().mean().backward()
        return logits, x.grad, lm.model.model.layers[0].self_attn.q_proj.weight.grad.clone()

    calls = _QueryLengths(monkeypatch)
    got = run()
    assert calls.lengths and max(calls.lengths) == 12  # per sample, never the whole row of 20
    _dense_only(monkeypatch, transformers_lm)
    calls.lengths.clear()
    expected = run()
    assert max(calls.lengths) == 20
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_packed_images_attend_per_image_with_the_dense_mask_s_features(monkeypatch):
    import vlmkit.vision.transformers_encoder as transformers_encoder
    from vlmkit.vision import TransformersVisionEncoder

    torch.manual_seed(0)
    encoder = TransformersVisionEncoder(config=TINY_SIGLIP, attn_implementation="sdpa", patch_packing=True)
    pixels = torch.randn(3, 3, 32, 32)
    patch_mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    for i, (rows, cols) in enumerate([(4, 4), (2, 3), (4, 1)]):
        patch_mask[i, :rows, :cols] = True

    def run():
        x = pixels.clone().requires_grad_()
        features = encoder(x, patch_mask)
        features[patch_mask.flatten(1)].square().mean().backward()
        return features[patch_mask.flatten(1)], x.grad

    calls = _QueryLengths(monkeypatch)
    got = run()
    assert max(calls.lengths) == 16  # image by image, not the 16 + 6 + 4 packed tokens
    _dense_only(monkeypatch, transformers_encoder)
    calls.lengths.clear()
    expected = run()
    assert max(calls.lengths) == 26
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)
