"""The config side of the Idefics3/SmolVLM correspondence: an ``Idefics3Config``/``SmolVLMConfig`` <-> vlmkit parts.

Idefics3 (and SmolVLM, its successor) is Idefics2 with the perceiver replaced by a pixel shuffle and a bias-free
linear projection: ``TransformersVisionEncoder`` (the Idefics3/SmolVLM tower, bucketed positions) +
:class:`~vlmkit.connectors.PixelShuffleConnector` + fully autoregressive fusion + the text model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlmkit.connectors.pixel_shuffle import PixelShuffleConnector
from vlmkit.fusion.autoregressive import FullyAutoregressiveFusion
from vlmkit.interop.parts import (
    check_image_token,
    check_shape,
    common_parts_config,
    language_model_from_config,
    vision_encoder_from_config,
)
from vlmkit.model import VisionLanguageModel

if TYPE_CHECKING:
    from transformers import Idefics3Config, SmolVLMConfig

    from vlmkit.interop.idefics3_processing import Idefics3Family

__all__ = ["idefics3_config", "idefics3_skeleton"]

_VISION_MODEL_TYPES = {"idefics3": "idefics3_vision", "smolvlm": "smolvlm_vision"}


def idefics3_skeleton(
    config: Idefics3Config | SmolVLMConfig, tokenizer: str, attn_implementation: str | None = "sdpa"
) -> VisionLanguageModel:
    """The vlmkit model of an Idefics3 or SmolVLM config, randomly initialised (``torch.device("meta")``: no memory).

    Args:
        config: An ``Idefics3Config`` or ``SmolVLMConfig``.
        tokenizer: Tokenizer path or name; it must hold the image tokens at ids below ``text_config.vocab_size``,
            and ``<image>`` at ``config.image_token_id``.
        attn_implementation: Attention kernel of the vision tower and the text model.

    Raises:
        ValueError: If the config is of another model type, the tokenizer's ``<image>`` id differs from
            ``config.image_token_id`` or the tokenizer is larger than the text vocabulary.
    """
    if config.model_type not in _VISION_MODEL_TYPES:
        raise ValueError(f"a {config.model_type!r} config is no Idefics3 or SmolVLM config")
    text, vision = config.text_config, config.vision_config
    encoder = vision_encoder_from_config(vision, _VISION_MODEL_TYPES[config.model_type], attn_implementation)
    connector = PixelShuffleConnector(vision.hidden_size, text.hidden_size, scale_factor=config.scale_factor)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    lm = language_model_from_config(text, tied, tokenizer, attn_implementation)
    # "full": plain parameters with the checkpoint's keys (no adapter or trainable-token wrappers)
    vlm = VisionLanguageModel(
        encoder, connector, lm, FullyAutoregressiveFusion(), train_vision_encoder="full", train_language_model="full"
    )
    check_image_token(vlm, config.image_token_id)
    return vlm


def idefics3_config(vlm: VisionLanguageModel, family: Idefics3Family = "idefics3") -> Idefics3Config | SmolVLMConfig:
    """The ``Idefics3Config`` (or ``SmolVLMConfig``) describing ``vlm`` (with its adapters merged).

    Raises:
        ValueError: If a part does not have Idefics3's shape (named, with the offending value): the connector must
            be a ``PixelShuffleConnector`` with a linear projection (Idefics3's ``modality_projection``).
    """
    from transformers import Idefics3Config, SmolVLMConfig

    name = "SmolVLM" if family == "smolvlm" else "Idefics3"
    vision, text = common_parts_config(vlm, name, PixelShuffleConnector)
    projection = vlm.connector.projection
    check_shape(
        name,
        (
            "connector.projection",
            "mlp" if not hasattr(projection, "weight") else "linear",
            "'linear'",
            hasattr(projection, "weight") and getattr(projection, "bias", None) is None,
        ),
    )
    config_class = SmolVLMConfig if family == "smolvlm" else Idefics3Config
    config = config_class(
        vision_config=vision,
        text_config=text.to_dict(),
        scale_factor=vlm.connector.scale_factor,
        image_token_id=vlm.image_token_id,
        tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
        pad_token_id=vlm.tokenizer.pad_token_id,
    )
    config.architectures = [f"{name}ForConditionalGeneration"]
    return config
