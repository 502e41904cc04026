"""Text side of a VLM: tokenizers with image tokens, and the chat template."""

from vlmkit.text.template import ChatTemplate, Turn
from vlmkit.text.tokenizer import (
    END_OF_UTTERANCE_TOKEN,
    FAKE_IMAGE_TOKEN,
    IMAGE_TOKEN,
    SYNTHETIC_TOKENIZER,
    add_vlm_special_tokens,
    build_synthetic_tokenizer,
    load_tokenizer,
)

__all__ = [
    "END_OF_UTTERANCE_TOKEN",
    "FAKE_IMAGE_TOKEN",
    "IMAGE_TOKEN",
    "SYNTHETIC_TOKENIZER",
    "ChatTemplate",
    "Turn",
    "add_vlm_special_tokens",
    "build_synthetic_tokenizer",
    "load_tokenizer",
]
