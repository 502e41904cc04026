"""Tiny random-init parts shared by the tests (no network)."""

from __future__ import annotations

import copy
import functools

import torch

TINY_LM = {
    "model_type": "mistral",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "vocab_size": 512,
}
_COMMON = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": 300,
}
LM_FAMILIES = {
    # model_type: (tiny config, decoder layer class, where the family keeps its layers)
    "llama": ({**_COMMON, "num_key_value_heads": 2}, "LlamaDecoderLayer", "model.layers"),
    "mistral": ({**_COMMON, "num_key_value_heads": 2}, "MistralDecoderLayer", "model.layers"),
    "qwen2": ({**_COMMON, "num_key_value_heads": 2}, "Qwen2DecoderLayer", "model.layers"),
    "gemma": ({**_COMMON, "num_key_value_heads": 2, "head_dim": 8}, "GemmaDecoderLayer", "model.layers"),
    "phi": (_COMMON, "PhiDecoderLayer", "model.layers"),
    "phi3": (
        {**_COMMON, "num_key_value_heads": 2, "pad_token_id": 0, "eos_token_id": 0},
        "Phi3DecoderLayer",
        "model.layers",
    ),
    "gpt2": (
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 300, "bos_token_id": 0, "eos_token_id": 0},
        "GPT2Block",
        "transformer.h",
    ),
    "gpt_neox": ({**_COMMON, "eos_token_id": 0}, "GPTNeoXLayer", "gpt_neox.layers"),
    "opt": ({**_COMMON, "ffn_dim": 64}, "OPTDecoderLayer", "model.decoder.layers"),
    "falcon": (_COMMON, "FalconDecoderLayer", "transformer.h"),
}
"""Tiny configs (width 32, 2 layers, vocabulary grown to the synthetic tokenizer's) of causal LM families."""
TINY_SIGLIP = {
    "model_type": "siglip_vision_model",
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}


def build_tiny_vlm(connector=None, seed: int = 0, **kwargs):
    """A tiny SigLIP + perceiver + Mistral VLM (fp32, random init)."""
    from vlmkit.connectors import PerceiverResampler
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.model import VisionLanguageModel
    from vlmkit.vision import TransformersVisionEncoder

    torch.manual_seed(seed)
    if connector is None:
        connector = functools.partial(
            PerceiverResampler, num_latents=4, depth=1, num_heads=2, head_dim=16, num_key_value_heads=1
        )
    return VisionLanguageModel(
        TransformersVisionEncoder(config=TINY_SIGLIP, position_embedding="bucket"),
        connector,
        TransformersCausalLM(config=TINY_LM, tokenizer="synthetic"),
        **kwargs,
    )


def uncached_greedy(vlm, batch, steps: int) -> torch.Tensor:
    """Reference decoding: re-run the whole left-padded sequence for every new token ``[b, steps]``."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for _ in range(steps):
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = vlm(ids, mask, batch["pixel_values"], batch["patch_mask"], position_ids=position_ids).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return ids[:, -steps:]


TINY_PERCEIVER = {
    "class_path": "vlmkit.connectors.PerceiverResampler",
    "init_args": {"num_latents": 4, "depth": 1, "num_heads": 2, "head_dim": 16, "num_key_value_heads": 1},
}


def tiny_composition(connector: dict | None = None, fusion: dict | None = None, **init_args) -> dict:
    """The tiny SigLIP + Mistral VLM as a recipe's ``model.vlm``; a perceiver connector by default."""
    parts = {
        "vision_encoder": {
            "class_path": "vlmkit.vision.TransformersVisionEncoder",
            "init_args": {"config": dict(TINY_SIGLIP), "position_embedding": "bucket"},
        },
        "connector": connector or TINY_PERCEIVER,
        "language_model": {
            "class_path": "vlmkit.llm.TransformersCausalLM",
            "init_args": {"config": dict(TINY_LM), "tokenizer": "synthetic"},
        },
    }
    if fusion is not None:
        parts["fusion"] = fusion
    composition = {"class_path": "vlmkit.model.VisionLanguageModel", "init_args": {**parts, **init_args}}
    return copy.deepcopy(composition)  # callers may edit it
