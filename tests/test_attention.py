import pytest
import transformers.utils
from tiny_models import TINY_LM, TINY_SIGLIP


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
    assert lm.model.config._attn_implementation == "sdpa"
    with pytest.warns(UserWarning, match="vision_encoder.attn_implementation='flash_attention_2'"):
        encoder = TransformersVisionEncoder(config=TINY_SIGLIP, attn_implementation="flash_attention_2")
    assert encoder.backbone.config._attn_implementation == "sdpa"
