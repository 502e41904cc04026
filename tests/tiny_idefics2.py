"""A tiny random transformers Idefics2 checkpoint, saved with ``save_pretrained`` (no network)."""

from __future__ import annotations

import torch
from PIL import Image

PATCH = 8
LATENTS = 8


def save_tiny_idefics2(
    path,
    splitting: bool = False,
    seed: int = 0,
    tie_word_embeddings: bool = False,
    tokenizer=None,
    max_shard_size: str | None = None,
):
    """Save a tiny ``Idefics2ForConditionalGeneration`` with its processor to ``path``; return (model, processor).

    ``tokenizer`` (default: the synthetic one) must not hold the image tokens yet: the processor adds them.
    ``max_shard_size`` saves the weights as shards with a ``model.safetensors.index.json``.
    """
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2ImageProcessor,
        Idefics2Processor,
    )

    from vlmkit.interop import IDEFICS2_CHAT_TEMPLATE
    from vlmkit.text.tokenizer import build_synthetic_tokenizer

    if tokenizer is None:
        tokenizer = build_synthetic_tokenizer()  # without the image tokens: the processor adds 3
    image_processor = Idefics2ImageProcessor(
        do_image_splitting=splitting, size={"shortest_edge": 24, "longest_edge": 48}
    )
    processor = Idefics2Processor(
        image_processor, tokenizer, image_seq_len=LATENTS, chat_template=IDEFICS2_CHAT_TEMPLATE
    )
    config = Idefics2Config(
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            patch_size=PATCH,
            image_size=48,
        ),
        perceiver_config=dict(
            hidden_size=64,
            resampler_n_latents=LATENTS,
            resampler_depth=2,
            resampler_n_heads=4,
            resampler_head_dim=16,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
        ),
        text_config=dict(
            model_type="mistral",
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            rms_norm_eps=1e-5,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = Idefics2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # random weights everywhere (the latents start at ones, the norms at 1)
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * (0.5 if param.ndim == 1 else param.shape[-1] ** -0.5))
    model.save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    processor.save_pretrained(path)
    return model, processor


def images(seed: int = 0) -> list[Image.Image]:
    """Four RGB images of different sizes and aspect ratios (some need resizing, some padding)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(40, 24), (24, 48), (64, 64), (20, 33)]  # (width, height)
    return [
        Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8).numpy())
        for w, h in sizes
    ]
