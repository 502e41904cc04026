"""Tiny random transformers Idefics3 and SmolVLM checkpoints with unusual sizes, saved with ``save_pretrained``.

Neither configuration is one of transformers' own tests: an Idefics3 with a 9 x 9 patch grid per 72 px tile and a
pixel shuffle of 3 (9 tokens per view), tiles chosen for a longest side of 150 (not a multiple of the tile: rounded up
to 216), a text model of width 40 with grouped-query attention; a SmolVLM (SmolVLMForConditionalGeneration) with
6 x 6 patches per 48 px tile, pixel shuffle 2, longest side 112, a width-48 text model with GQA and tied embeddings.
"""

from __future__ import annotations

import torch
from PIL import Image

IDEFICS3 = {
    "patch": 8,
    "tile": 72,
    "longest": 150,
    "scale_factor": 3,
    "tokens_per_view": 9,
    "vision": {"hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 4},
    "text": {
        "model_type": "llama",
        "hidden_size": 40,
        "intermediate_size": 72,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
    },
    "tied": False,
}
SMOLVLM = {
    "patch": 8,
    "tile": 48,
    "longest": 112,
    "scale_factor": 2,
    "tokens_per_view": 9,
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "text": {
        "model_type": "llama",
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
    },
    "tied": True,
}
SPECS = {"idefics3": IDEFICS3, "smolvlm": SMOLVLM}


def save_tiny(family: str, path, seed: int = 0, max_shard_size: str | None = None):
    """Save a tiny ``Idefics3ForConditionalGeneration`` or ``SmolVLMForConditionalGeneration`` with its processor.

    Returns:
        ``(model, processor)``, transformers' own objects.
    """
    from tiny_tokenizers import llama3_tokenizer, smolvlm_tokenizer

    from vlmkit.interop import IDEFICS3_CHAT_TEMPLATE, SMOLVLM_CHAT_TEMPLATE, Idefics3ProcessorSettings

    spec = SPECS[family]
    # Idefics3's processor adds its image tokens to a Llama 3 tokenizer; SmolVLM's tokenizer ships them
    tokenizer = llama3_tokenizer() if family == "idefics3" else smolvlm_tokenizer()
    settings = Idefics3ProcessorSettings(family=family, tile_size=spec["tile"], max_image_size=spec["longest"])
    template = IDEFICS3_CHAT_TEMPLATE if family == "idefics3" else SMOLVLM_CHAT_TEMPLATE
    processor = settings.processor(tokenizer, spec["tokens_per_view"], template)
    tokenizer = processor.tokenizer
    config = _config(family, spec, tokenizer)
    torch.manual_seed(seed)
    model = _model_class(family)(config).eval()
    with torch.no_grad():  # random weights everywhere (norms start at 1)
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * (0.5 if param.ndim == 1 else param.shape[-1] ** -0.5))
    model.save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    processor.save_pretrained(path)
    return model, processor


def _config(family: str, spec: dict, tokenizer):
    from transformers import Idefics3Config, SmolVLMConfig

    text = spec["text"] | {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": spec["tied"],
    }
    vision = spec["vision"] | {"patch_size": spec["patch"], "image_size": spec["tile"]}
    config_class = Idefics3Config if family == "idefics3" else SmolVLMConfig
    return config_class(
        vision_config=vision,
        text_config=text,
        scale_factor=spec["scale_factor"],
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=spec["tied"],
    )


def _model_class(family: str):
    from transformers import Idefics3ForConditionalGeneration, SmolVLMForConditionalGeneration

    return Idefics3ForConditionalGeneration if family == "idefics3" else SmolVLMForConditionalGeneration


def images(seed: int = 0) -> list[Image.Image]:
    """RGB images of several sizes and aspect ratios: wide, tall, square, tiny (upscaled), one that fits one tile."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(100, 60), (30, 90), (64, 64), (13, 7), (48, 20)]  # (width, height)
    return [
        Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8).numpy())
        for w, h in sizes
    ]
