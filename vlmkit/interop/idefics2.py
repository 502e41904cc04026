"""Import and export transformers Idefics2 checkpoints (``Idefics2ForConditionalGeneration``).

An Idefics2 checkpoint is exactly a vlmkit composition: ``TransformersVisionEncoder`` (its vision tower, bucketed
positions), ``PerceiverResampler`` with the gated-MLP modality projection, ``FullyAutoregressiveFusion`` and a
``TransformersCausalLM`` (Mistral), so import and export are a pure renaming of weights plus the configs. Every weight
is mapped in both directions and anything left over is an error. The checkpoint's own tokenizer is kept, so the ids
of ``<fake_token_around_image>``, ``<image>`` and ``<end_of_utterance>`` are the checkpoint's.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping

import torch

from vlmkit.dtypes import parse_dtype
from vlmkit.interop.idefics2_config import idefics2_config, idefics2_skeleton
from vlmkit.interop.idefics2_processing import (
    IDEFICS2_CHAT_TEMPLATE,
    Idefics2ProcessorSettings,
)
from vlmkit.interop.safetensors_checkpoint import SafetensorsCheckpoint
from vlmkit.interop.transformers_checkpoint import (
    KeyMap,
    compose_imported,
    load_strictly,
    merge_for_export,
    write_checkpoint,
)
from vlmkit.model import VisionLanguageModel
from vlmkit.trainability import Trainability

logger = logging.getLogger(__name__)

__all__ = ["export_idefics2", "idefics2_to_vlmkit_keys", "import_idefics2", "vlmkit_to_idefics2_keys"]

IDEFICS2_KEYS = KeyMap(
    "Idefics2",
    (  # (transformers prefix, vlmkit prefix), most specific first
        ("model.vision_model.", "vision_encoder.backbone."),
        ("model.connector.modality_projection.", "connector.modality_projection."),
        ("model.connector.perceiver_resampler.", "connector."),
        ("model.text_model.", "language_model.model.model."),
        ("lm_head.", "language_model.model.lm_head."),
    ),
    unused=("vision_encoder.backbone.head.",),  # SigLIP's attention-pooling head (unused by vlmkit's forward)
)
"""Idefics2's weight names in transformers and in vlmkit."""


def idefics2_to_vlmkit_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``Idefics2ForConditionalGeneration`` state dict to ``VisionLanguageModel`` keys.

    Raises:
        KeyError: Listing the keys that belong to no known part.
    """
    return IDEFICS2_KEYS.to_vlmkit(state_dict)


def vlmkit_to_idefics2_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``VisionLanguageModel`` state dict (of the Idefics2 shape) to ``Idefics2ForConditionalGeneration`` keys.

    SigLIP's pooling head (``vision_encoder.backbone.head.*``), which vlmkit never runs, is dropped.

    Raises:
        KeyError: Listing the keys that belong to no known part.
    """
    return IDEFICS2_KEYS.to_transformers(state_dict)


def import_idefics2(
    path_or_name: str,
    train_vision_encoder: Trainability = "frozen",
    train_language_model: Trainability = "frozen",
    neftune_alpha: float = 0.0,
    gradient_checkpointing: bool = False,
    compile_blocks: bool = False,
    torch_dtype: str | None = None,
    attn_implementation: str | None = "sdpa",
    patch_packing: bool = False,
) -> VisionLanguageModel:
    """Build a :class:`VisionLanguageModel` from a transformers Idefics2 checkpoint, every weight mapped.

    The parts are built from the checkpoint's configs on the ``meta`` device (vision tower with Idefics2's bucketed
    positions, perceiver with the MLP modality projection, fully autoregressive fusion, the text model). The
    safetensors files (one, or the shards of ``model.safetensors.index.json``) are then matched against the model
    from their headers before anything loads: every checkpoint tensor must map to a model weight of its shape and
    every model weight must be in the checkpoint (``lm_head.weight`` may be absent when the config ties it to the
    embeddings), otherwise the import fails naming all of them. No weight is ever initialised at random. Key layouts
    of checkpoints saved by transformers 4 and 5 are the same for Idefics2 (transformers 5 has no conversion mapping
    for ``idefics2``, ``mistral`` or its vision tower).

    The tokenizer is the checkpoint's, so the image token ids are its own; the encoder's normalisation is set from
    the image processor config (see :class:`Idefics2ProcessorSettings` for the other image settings). The model
    keeps the checkpoint's chat template (``vlm.chat_template``: processors render exactly transformers' text) and
    stops generating at its ``generation_config`` EOS tokens plus ``<end_of_utterance>``.
    Usable from YAML as ``vlm: {class_path: vlmkit.interop.import_idefics2, init_args: {path_or_name: ...}}``.

    Args:
        path_or_name: Local checkpoint directory, or a hub name on machines with network.
        train_vision_encoder: Trainability of the vision tower.
        train_language_model: Trainability of the text model (``"dora"`` for Idefics2's instruction tuning).
        neftune_alpha: NEFTune noise scale in training (paper section 4.2: used in instruction tuning); 0 disables.
        gradient_checkpointing: Recompute the activations of every repeated block in the backward pass.
        compile_blocks: Compile every repeated block with ``torch.compile`` (regional; see ``VisionLanguageModel``).
        torch_dtype: Weight dtype name (``"bfloat16"``, ``"float32"``); ``None`` keeps the checkpoint's.
        attn_implementation: Attention kernel of the vision tower and the text model. ``"sdpa"`` (the default)
            computes packed rows and packed images segment by segment (:data:`vlmkit.attention.SEGMENT_SDPA`);
            ``"flash_attention_2"`` (CUDA, flash-attn installed) runs them as varlen sequences.
        patch_packing: Run the vision tower on the real patches of all images as one sequence, each image
            attending to itself (NaViT-style, :mod:`vlmkit.vision.patch_packing`), instead of padding every image to
            the largest: faster for images of different sizes; the same features.

    Returns:
        The model; its ``forward`` logits equal ``Idefics2ForConditionalGeneration``'s (fp32, within 1e-4).

    Raises:
        ValueError: If the checkpoint is not an Idefics2 checkpoint, its tokenizer and config disagree on the
            image token id or the vocabulary, or its tensors do not match the model (every unmapped, missing and
            misshapen tensor named).
        FileNotFoundError: If the checkpoint has no safetensors weights.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path_or_name, trust_remote_code=False)
    if config.model_type != "idefics2":
        raise ValueError(f"{path_or_name!r} holds a {config.model_type!r} checkpoint, not 'idefics2'")
    checkpoint = SafetensorsCheckpoint.open(path_or_name)
    settings = Idefics2ProcessorSettings.from_pretrained(path_or_name)
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        vlm = idefics2_skeleton(
            config, tokenizer=path_or_name, attn_implementation=attn_implementation, patch_packing=patch_packing
        )
    tied = bool(getattr(config, "tie_word_embeddings", False))
    load_strictly(vlm, checkpoint, IDEFICS2_KEYS, tied, parse_dtype(torch_dtype))
    return compose_imported(
        vlm,
        path_or_name,
        settings.image_mean,
        settings.image_std,
        IDEFICS2_CHAT_TEMPLATE,
        "Idefics2",
        train_vision_encoder=train_vision_encoder,
        train_language_model=train_language_model,
        neftune_alpha=neftune_alpha,
        gradient_checkpointing=gradient_checkpointing,
        compile_blocks=compile_blocks,
    )


def export_idefics2(
    vlm: VisionLanguageModel,
    output_dir: str | os.PathLike,
    settings: Idefics2ProcessorSettings | None = None,
    max_shard_size: str = "5GB",
) -> None:
    """Save ``vlm`` as a transformers Idefics2 checkpoint: config, safetensors weights, processor and tokenizer.

    Adapters (LoRA/DoRA, and the trainable rows of the new tokens of a frozen LM) are merged into the base weights
    first, in place, with :func:`vlmkit.adapters.merge_adapters`: afterwards ``vlm`` holds plain weights.
    ``Idefics2ForConditionalGeneration.from_pretrained(output_dir)`` and ``AutoProcessor.from_pretrained(output_dir)``
    load the result.

    Args:
        vlm: A model of Idefics2's shape: a ``TransformersVisionEncoder`` (``idefics2_vision`` or SigLIP tower,
            ``position_embedding="bucket"``, last layer), a ``PerceiverResampler`` with its modality projection
            (hidden size = the LM's intermediate size, same activation as the LM, ``mlp_ratio=4``), fully
            autoregressive fusion, a ``TransformersCausalLM`` with a ``model.``-prefixed base model (Mistral, Llama).
        output_dir: Directory to write (created if needed).
        settings: Image processor settings; default: the encoder's normalisation, 378..980 px, no splitting.
        max_shard_size: Largest safetensors shard.

    Raises:
        ValueError: If ``vlm`` is not of that shape (the mismatching part and value named).
    """
    merge_for_export(vlm)
    write_checkpoint(vlm, idefics2_config(vlm), IDEFICS2_KEYS, output_dir, max_shard_size)
    settings = settings or Idefics2ProcessorSettings(
        image_mean=vlm.vision_encoder.image_mean, image_std=vlm.vision_encoder.image_std
    )
    processor = settings.processor(
        copy.deepcopy(vlm.tokenizer), vlm.connector.num_latents, vlm.chat_template or IDEFICS2_CHAT_TEMPLATE
    )
    processor.save_pretrained(output_dir)
