"""Shared plumbing of the numbered lessons: where figures go, the fast mode, and the tiny parts they compose.

Not a lesson. Every lesson imports it first, so matplotlib draws off-screen (Agg) and figures land in
``examples/out/`` (or ``$VLMKIT_EXAMPLES_OUT``). ``VLMKIT_LESSON_FAST=1`` shrinks steps and sizes so the test suite
can run every lesson in seconds; the numbers a lesson prints then show less (it says so).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed; figures are written as PNG files

import matplotlib.pyplot as plt  # noqa: E402

FAST = os.environ.get("VLMKIT_LESSON_FAST", "") not in ("", "0")
"""Fast mode (the tests): fewer steps, smaller data."""


def out_dir() -> Path:
    """The figure folder (created on demand): ``$VLMKIT_EXAMPLES_OUT`` or ``examples/out``."""
    path = Path(os.environ.get("VLMKIT_EXAMPLES_OUT") or Path(__file__).resolve().parent / "out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save(fig: plt.Figure, name: str) -> Path:
    """Write ``fig`` as ``<out>/<name>`` (PNG), close it, print and return the path."""
    path = out_dir() / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"figure written: {path}")
    return path


def siglip_config(hidden_size: int = 64, layers: int = 2, image_size: int = 64, patch_size: int = 8) -> dict[str, Any]:
    """A tiny SigLIP vision tower (random weights): ``image_size / patch_size`` positions per side."""
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def llama_config(hidden_size: int = 64, layers: int = 2, vocab_size: int = 512) -> dict[str, Any]:
    """A tiny Llama-style causal LM (random weights), sized for vlmkit's synthetic tokenizer."""
    return {
        "model_type": "llama",
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab_size,
    }


def tiny_vlm(
    fusion: Any = None,
    num_latents: int = 8,
    hidden_size: int = 64,
    layers: int = 2,
    **trainability: Any,
) -> Any:
    """A tiny VLM from vlmkit's parts: SigLIP (patch 8) + perceiver resampler + Llama, random weights.

    Args:
        fusion: A fusion module (default: fully autoregressive).
        num_latents: Visual tokens per image.
        hidden_size: Width of the encoder and the LM.
        layers: Layers of the encoder and the LM.
        **trainability: ``train_vision_encoder=...`` etc., passed to ``VisionLanguageModel``.
    """
    import functools

    from vlmkit.connectors import PerceiverResampler
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.model import VisionLanguageModel
    from vlmkit.vision import TransformersVisionEncoder

    return VisionLanguageModel(
        vision_encoder=TransformersVisionEncoder(
            config=siglip_config(hidden_size, layers), position_embedding="bucket"
        ),
        connector=functools.partial(
            PerceiverResampler, num_latents=num_latents, depth=1, num_heads=4, head_dim=16, num_key_value_heads=2
        ),
        language_model=TransformersCausalLM(config=llama_config(hidden_size, layers), tokenizer="synthetic"),
        fusion=fusion,
        **trainability,
    )


def _quiet_transformers() -> None:
    """No download/loading progress bars in the lessons' output."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


_quiet_transformers()
