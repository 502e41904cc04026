"""The parts every transformers VLM config describes the same way: the vision tower and the causal LM, both ways.

Idefics2, Idefics3 and SmolVLM differ in their connector; their vision towers (SigLIP with bucketed positions) and
text models (any transformers causal LM under ``model.text_model`` + ``lm_head``) are built and described by the
functions here, with the checks that keep a checkpoint's tokenizer and config consistent.
"""

from __future__ import annotations

import copy
from typing import Any

from vlmkit.fusion.autoregressive import FullyAutoregressiveFusion
from vlmkit.llm.transformers_lm import TransformersCausalLM
from vlmkit.model import VisionLanguageModel
from vlmkit.text.tokenizer import FAKE_IMAGE_TOKEN, IMAGE_TOKEN
from vlmkit.vision.transformers_encoder import TransformersVisionEncoder

__all__ = [
    "VISION_CONFIG_KEYS",
    "check_shape",
    "check_image_token",
    "common_parts_config",
    "language_model_from_config",
    "vision_encoder_from_config",
]

VISION_CONFIG_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
)
"""The vision config fields the Idefics towers and SigLIP share."""
VISION_TOWERS = ("idefics2_vision", "idefics3_vision", "smolvlm_vision", "siglip_vision_model", "siglip")
"""Vision towers exportable as an Idefics tower (the same modules and weight names)."""


def vision_encoder_from_config(
    vision_config: Any, model_type: str, attn_implementation: str | None, patch_packing: bool = False
) -> TransformersVisionEncoder:
    """The vision tower of a VLM config as a ``TransformersVisionEncoder`` with bucketed positions."""
    config = {key: getattr(vision_config, key) for key in VISION_CONFIG_KEYS} | {"model_type": model_type}
    return TransformersVisionEncoder(
        config=config, attn_implementation=attn_implementation, position_embedding="bucket", patch_packing=patch_packing
    )


def language_model_from_config(
    text_config: Any, tied: bool, tokenizer: str, attn_implementation: str | None
) -> TransformersCausalLM:
    """The text model of a VLM config as a ``TransformersCausalLM`` with the checkpoint's tokenizer.

    Args:
        text_config: The VLM config's ``text_config``.
        tied: The VLM config's ``tie_word_embeddings`` (transformers ties ``lm_head`` by the top-level flag).
        tokenizer: Tokenizer path or name.
        attn_implementation: Attention kernel.

    Raises:
        ValueError: If the tokenizer holds more tokens than the text vocabulary (which would otherwise grow the
            embeddings silently).
    """
    config = text_config.to_diff_dict() | {"model_type": text_config.model_type, "tie_word_embeddings": tied}
    lm = TransformersCausalLM(config=config, tokenizer=tokenizer, attn_implementation=attn_implementation)
    if lm.vocab_size != text_config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer!r} has {len(lm.tokenizer)} tokens (with the image tokens), more than the "
            f"checkpoint's text vocab_size={text_config.vocab_size}"
        )
    return lm


def check_image_token(vlm: VisionLanguageModel, image_token_id: int) -> None:
    """Raise unless the tokenizer puts ``<image>`` at the config's ``image_token_id``."""
    if vlm.image_token_id != image_token_id:
        raise ValueError(
            f"the tokenizer puts {IMAGE_TOKEN} at id {vlm.image_token_id} but the config's image_token_id is "
            f"{image_token_id}"
        )


def common_parts_config(vlm: VisionLanguageModel, family: str, connector_class: type) -> tuple[dict, Any]:
    """Check the parts every Idefics family shares and describe them: ``(vision_config dict, text config)``.

    Raises:
        ValueError: Naming the first part that does not fit the family (adapters left, another encoder, fusion,
            connector class or LM, positions other than bucketed ones, an intermediate feature layer, a tower of
            another family, an LM without a ``model.`` base, a tokenizer without ``<fake_token_around_image>``).
    """
    from vlmkit.adapters import has_adapters

    encoder, connector, lm = vlm.vision_encoder, vlm.connector, vlm.language_model
    check_shape(  # (part, its value, expected, holds): parts first, so the checks after them can read attributes
        family,
        ("the model", "holding adapters", "plain weights (merge_adapters first)", not has_adapters(vlm)),
        (
            "vision_encoder",
            type(encoder).__name__,
            "TransformersVisionEncoder",
            isinstance(encoder, TransformersVisionEncoder),
        ),
        (
            "fusion",
            type(vlm.fusion).__name__,
            "FullyAutoregressiveFusion",
            isinstance(vlm.fusion, FullyAutoregressiveFusion),
        ),
        ("connector", type(connector).__name__, connector_class.__name__, isinstance(connector, connector_class)),
        ("language_model", type(lm).__name__, "TransformersCausalLM", isinstance(lm, TransformersCausalLM)),
    )
    prefix = getattr(lm.model, "base_model_prefix", None)
    fake = vlm.tokenizer.convert_tokens_to_ids(FAKE_IMAGE_TOKEN)
    check_shape(
        family,
        (
            "vision_encoder.position_embedding",
            encoder.position_embedding,
            "'bucket'",
            encoder.position_embedding == "bucket",
        ),
        ("vision_encoder.feature_layer", encoder.feature_layer, "-1", encoder.feature_layer == -1),
        (
            "vision_encoder.model_type",
            encoder.model_type,
            "an Idefics or SigLIP tower",
            encoder.model_type in VISION_TOWERS,
        ),
        ("the LM's base_model_prefix", prefix, "'model'", prefix == "model"),
        ("the tokenizer's " + FAKE_IMAGE_TOKEN, fake, "a token id", fake not in (None, vlm.tokenizer.unk_token_id)),
    )
    text = copy.deepcopy(lm.model.config)
    text.vocab_size = lm.vocab_size
    text.use_cache = True
    backbone = encoder.backbone.config
    vision = {key: getattr(backbone, key) for key in VISION_CONFIG_KEYS if hasattr(backbone, key)}
    return vision, text


def check_shape(family: str, *checks: tuple[str, Any, str, bool]) -> None:
    """Raise on the first ``(what, got, expected, holds)`` that does not hold."""
    for what, got, expected, holds in checks:
        if not holds:
            raise ValueError(f"not exportable as {family}: {what} is {got!r}, expected {expected}")
