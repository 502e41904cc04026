"""Import and export transformers Idefics3 and SmolVLM checkpoints.

``Idefics3ForConditionalGeneration`` and ``SmolVLMForConditionalGeneration`` are the same vlmkit composition:
``TransformersVisionEncoder`` (their tower, bucketed positions), :class:`~vlmkit.connectors.PixelShuffleConnector`
(space-to-depth + a bias-free linear projection), ``FullyAutoregressiveFusion`` and a ``TransformersCausalLM`` (Llama 3
for Idefics3, SmolLM2 for SmolVLM), with images tiled Idefics3's way (``VisionLanguageModel.tile_size``). SmolVLM v1
checkpoints (SmolVLM-256M/500M/2.2B) are saved as ``idefics3``, SmolVLM2 ones as ``smolvlm``; both import here. Import
and export share Idefics2's machinery (:mod:`vlmkit.interop.transformers_checkpoint`): strict matching of every
tensor, the checkpoint's own tokenizer, chat template and stop tokens.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping

import torch

from vlmkit.dtypes import parse_dtype
from vlmkit.interop.idefics3_config import idefics3_config, idefics3_skeleton
from vlmkit.interop.idefics3_processing import Idefics3ProcessorSettings
from vlmkit.interop.safetensors_checkpoint import SafetensorsCheckpoint
from vlmkit.interop.transformers_checkpoint import (
    KeyMap,
    compose_imported,
    load_strictly,
    merge_for_export,
    write_checkpoint,
)
from vlmkit.model import VisionLanguageModel
from vlmkit.quantization import Quantization, quantize_linear_layers
from vlmkit.trainability import Trainability

logger = logging.getLogger(__name__)

__all__ = ["export_idefics3", "idefics3_to_vlmkit_keys", "import_idefics3", "vlmkit_to_idefics3_keys"]

IDEFICS3_KEYS = KeyMap(
    "Idefics3",
    (  # (transformers prefix, vlmkit prefix), most specific first
        ("model.vision_model.", "vision_encoder.backbone."),
        ("model.connector.modality_projection.proj.", "connector.projection."),
        ("model.text_model.", "language_model.model.model."),
        ("lm_head.", "language_model.model.lm_head."),
    ),
    unused=("vision_encoder.backbone.head.",),  # SigLIP's attention-pooling head (unused by vlmkit's forward)
)
"""Idefics3's (and SmolVLM's) weight names in transformers and in vlmkit."""
_FAMILY_NAMES = {"idefics3": "Idefics3", "smolvlm": "SmolVLM"}


def idefics3_to_vlmkit_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``Idefics3ForConditionalGeneration`` (or SmolVLM) state dict to ``VisionLanguageModel`` keys.

    Raises:
        KeyError: Listing the keys that belong to no known part.
    """
    return IDEFICS3_KEYS.to_vlmkit(state_dict)


def vlmkit_to_idefics3_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``VisionLanguageModel`` state dict of Idefics3's shape to ``Idefics3ForConditionalGeneration`` keys.

    Raises:
        KeyError: Listing the keys that belong to no known part.
    """
    return IDEFICS3_KEYS.to_transformers(state_dict)


def import_idefics3(
    path_or_name: str,
    train_vision_encoder: Trainability = "frozen",
    train_language_model: Trainability = "frozen",
    neftune_alpha: float = 0.0,
    gradient_checkpointing: bool = False,
    torch_dtype: str | None = None,
    attn_implementation: str | None = "sdpa",
    quantization: Quantization | None = None,
    compute_dtype: str = "bfloat16",
) -> VisionLanguageModel:
    """Build a :class:`VisionLanguageModel` from an Idefics3 or SmolVLM checkpoint, every weight mapped.

    As :func:`~vlmkit.interop.import_idefics2`: the parts are built from the checkpoint's config on the ``meta``
    device, every tensor of the safetensors files is matched against the model before anything loads (every
    unmapped, missing and misshapen tensor named), nothing is initialised at random. The tokenizer, chat template
    (SmolVLM's ``<|im_start|>User:...``, Idefics3's ``<|begin_of_text|>User:...``) and generation stops are the
    checkpoint's; the encoder's normalisation and the model's ``tile_size`` come from its image processor config, so
    processors built from the model tile and write image text as the checkpoint's processor does (see
    :class:`~vlmkit.interop.Idefics3ProcessorSettings` for the sizes). Usable from YAML as
    ``vlm: {class_path: vlmkit.interop.import_idefics3, init_args: {path_or_name: ...}}``.

    Args:
        path_or_name: Local checkpoint directory, or a hub name on machines with network
            (``HuggingFaceTB/SmolVLM-256M-Instruct``, ``HuggingFaceM4/Idefics3-8B-Llama3``).
        train_vision_encoder: Trainability of the vision tower.
        train_language_model: Trainability of the text model (``"lora"`` with ``quantization``: QLoRA).
        neftune_alpha: NEFTune noise scale in training; 0 disables.
        gradient_checkpointing: Recompute the activations of every repeated block in the backward pass.
        torch_dtype: Weight dtype name; ``None`` keeps the checkpoint's (``compute_dtype`` with ``quantization``).
        attn_implementation: Attention kernel of the vision tower and the text model.
        quantization: Quantize the text model's linear layers after loading (``"nf4"``, ``"fp4"``, ``"int8"``;
            ``lm_head`` stays as it is), on this process's GPU: the text model is then ``frozen`` or adapted.
        compute_dtype: Dtype of the quantized matmuls (``"bfloat16"`` on GPU).

    Returns:
        The model; its ``forward`` logits equal transformers' model's (fp32, within 1e-4).

    Raises:
        ValueError: If the checkpoint is neither an ``idefics3`` nor a ``smolvlm`` checkpoint, its tokenizer and
            config disagree on the image token id or the vocabulary, or its tensors do not match the model (every
            unmapped, missing and misshapen tensor named).
        FileNotFoundError: If the checkpoint has no safetensors weights.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path_or_name, trust_remote_code=False)
    if config.model_type not in _FAMILY_NAMES:
        raise ValueError(f"{path_or_name!r} holds a {config.model_type!r} checkpoint, not 'idefics3' or 'smolvlm'")
    family = _FAMILY_NAMES[config.model_type]
    checkpoint = SafetensorsCheckpoint.open(path_or_name)
    settings = _settings(path_or_name, config)
    dtype = parse_dtype(torch_dtype) or (parse_dtype(compute_dtype) if quantization else None)
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        vlm = idefics3_skeleton(config, tokenizer=path_or_name, attn_implementation=attn_implementation)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    load_strictly(vlm, checkpoint, KeyMap(family, IDEFICS3_KEYS.prefixes, IDEFICS3_KEYS.unused), tied, dtype)
    lm = vlm.language_model
    if quantization is not None:
        quantize_linear_layers(lm, quantization, parse_dtype(compute_dtype), exclude=(lm.get_output_embeddings(),))
        lm.quantization = quantization  # the part refuses "full" training
    return compose_imported(
        vlm,
        path_or_name,
        settings.image_mean,
        settings.image_std,
        settings.chat_template,
        family,
        tile_size=settings.tile_size,
        train_vision_encoder=train_vision_encoder,
        train_language_model=train_language_model,
        neftune_alpha=neftune_alpha,
        gradient_checkpointing=gradient_checkpointing,
    )


def export_idefics3(
    vlm: VisionLanguageModel,
    output_dir: str | os.PathLike,
    settings: Idefics3ProcessorSettings | None = None,
    max_shard_size: str = "5GB",
) -> None:
    """Save ``vlm`` as a transformers Idefics3 or SmolVLM checkpoint: config, safetensors weights, processor, tokenizer.

    Adapters are merged into the base weights first, in place (quantized layers become plain dequantized ones).
    ``Idefics3ForConditionalGeneration.from_pretrained`` (``SmolVLMForConditionalGeneration`` for
    ``settings.family="smolvlm"``) and ``AutoProcessor.from_pretrained`` load the result; the processor renders the
    model's chat template (an imported checkpoint's, else the family's published one).

    Args:
        vlm: A model of Idefics3's shape: a ``TransformersVisionEncoder`` (an Idefics or SigLIP tower, bucketed
            positions, last layer), a ``PixelShuffleConnector`` with its linear projection, fully autoregressive
            fusion, a ``TransformersCausalLM`` with a ``model.``-prefixed base model.
        output_dir: Directory to write (created if needed).
        settings: Family and image processor settings; default: Idefics3, the model's ``tile_size`` (else the
            encoder's native resolution) as the tile, 4 tiles on the longest side, the encoder's normalisation.
        max_shard_size: Largest safetensors shard.

    Raises:
        ValueError: If ``vlm`` is not of that shape (the mismatching part and value named), or the settings' tile is
            not the model's ``tile_size``.
    """
    encoder = vlm.vision_encoder
    if settings is None:
        tile = vlm.tile_size or encoder.backbone.config.image_size
        settings = Idefics3ProcessorSettings(
            tile_size=tile, max_image_size=4 * tile, image_mean=encoder.image_mean, image_std=encoder.image_std
        )
    if vlm.tile_size is not None and settings.tile_size != vlm.tile_size:
        raise ValueError(f"settings.tile_size={settings.tile_size} but the model tiles with tile_size={vlm.tile_size}")
    merge_for_export(vlm)
    key_map = KeyMap(_FAMILY_NAMES[settings.family], IDEFICS3_KEYS.prefixes, IDEFICS3_KEYS.unused)
    write_checkpoint(vlm, idefics3_config(vlm, settings.family), key_map, output_dir, max_shard_size)
    image_seq_len = vlm.num_image_tokens(settings.tile_size, settings.tile_size)
    processor = settings.processor(
        copy.deepcopy(vlm.tokenizer), image_seq_len, vlm.chat_template or settings.chat_template
    )
    processor.save_pretrained(output_dir)


def _settings(path_or_name: str, config) -> Idefics3ProcessorSettings:
    """The checkpoint's processor settings; without an image processor config, the family's defaults (logged)."""
    try:
        return Idefics3ProcessorSettings.from_pretrained(path_or_name)
    except OSError:
        tile = config.vision_config.image_size
        logger.warning(
            "%s has no image processor config: tiles of %d px (the vision tower's), longest side %d",
            path_or_name,
            tile,
            4 * tile,
        )
        return Idefics3ProcessorSettings(family=config.model_type, tile_size=tile, max_image_size=4 * tile)
