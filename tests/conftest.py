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
