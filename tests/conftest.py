"""Shared fixtures; tiny builders live in ``tiny_models.py`` (on ``pythonpath``)."""

import pytest
from tiny_models import build_tiny_vlm


@pytest.fixture(scope="session")
def tokenizer():
    from vlmkit.text import load_tokenizer

    return load_tokenizer("synthetic")


@pytest.fixture(scope="session")
def tiny_vlm():
    return build_tiny_vlm().eval()


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory):
    """A tiny random Mistral saved with ``save_pretrained`` (loaded back by path, as a real checkpoint)."""
    import torch
    from tiny_models import TINY_LM
    from transformers import AutoModelForCausalLM

    from vlmkit.llm.transformers_lm import build_transformers_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_lm")
    AutoModelForCausalLM.from_config(build_transformers_config(TINY_LM)).save_pretrained(path)
    return str(path)
