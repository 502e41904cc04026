"""The config side of the Idefics2 correspondence: an ``Idefics2Config`` <-> vlmkit parts.

``idefics2_skeleton`` builds the parts an Idefics2 config describes (weights come later, from the checkpoint);
``idefics2_config`` describes a composed model as an ``Idefics2Config`` after checking, part by part, that it has
Idefics2's shape, and names the first part that does not.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from vlmkit.connectors.perceiver import PerceiverResampler
from vlmkit.fusion.autoregressive import FullyAutoregressiveFusion
from vlmkit.llm.transformers_lm import TransformersCausalLM
from vlmkit.model import VisionLanguageModel
from vlmkit.text.tokenizer import FAKE_IMAGE_TOKEN, IMAGE_TOKEN
from vlmkit.vision.transformers_encoder import TransformersVisionEncoder

if TYPE_CHECKING:
    from transformers import Idefics2Config

__all__ = ["idefics2_config", "idefics2_skeleton"]

_TOWERS = ("idefics2_vision", "siglip_vision_model", "siglip")
_VISION_CONFIG_KEYS = (
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


def idefics2_skeleton(
    config: Idefics2Config, tokenizer: str, attn_implementation: str | None = "sdpa"
) -> VisionLanguageModel:
    """The vlmkit model of an Idefics2 config, randomly initialised (use ``torch.device("meta")`` for no memory).

    Args:
        config: An ``Idefics2Config``.
        tokenizer: Tokenizer path or name (``"synthetic"`` for the offline one); it must hold the image tokens at
            ids below ``text_config.vocab_size``, and ``<image>`` at ``config.image_token_id``.
        attn_implementation: Attention kernel of the vision tower and the text model.

    Raises:
        ValueError: If the tokenizer's ``<image>`` id differs from ``config.image_token_id`` or the tokenizer is
            larger than the text vocabulary (which would otherwise grow the embeddings silently).
    """
    text, vision, perceiver = config.text_config, config.vision_config, config.perceiver_config
    if perceiver.hidden_act != text.hidden_act:
        raise ValueError(
            f"perceiver hidden_act={perceiver.hidden_act!r} differs from text hidden_act={text.hidden_act!r}; "
            "vlmkit's PerceiverResampler uses one activation for the projection and the layers"
        )
    vision_config = {key: getattr(vision, key) for key in _VISION_CONFIG_KEYS} | {"model_type": "idefics2_vision"}
    encoder = TransformersVisionEncoder(
        config=vision_config, attn_implementation=attn_implementation, position_embedding="bucket"
    )
    connector = PerceiverResampler(
        vision.hidden_size,
        text.hidden_size,
        num_latents=perceiver.resampler_n_latents,
        depth=perceiver.resampler_depth,
        num_heads=perceiver.resampler_n_heads,
        head_dim=perceiver.resampler_head_dim,
        num_key_value_heads=perceiver.num_key_value_heads,
        mlp_ratio=4,
        projection=True,
        projection_hidden_dim=text.intermediate_size,
        rms_norm_eps=perceiver.rms_norm_eps,
        activation=perceiver.hidden_act,
    )
    # transformers ties lm_head to the embeddings by the top-level flag (Idefics2ForConditionalGeneration's config)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    lm = TransformersCausalLM(
        config=text.to_diff_dict() | {"model_type": text.model_type, "tie_word_embeddings": tied},
        tokenizer=tokenizer,
        attn_implementation=attn_implementation,
    )
    if lm.vocab_size != text.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer!r} has {len(lm.tokenizer)} tokens (with the image tokens), more than the "
            f"checkpoint's text vocab_size={text.vocab_size}"
        )
    # "full": plain parameters with the checkpoint's keys (no adapter or trainable-token wrappers)
    vlm = VisionLanguageModel(
        encoder, connector, lm, FullyAutoregressiveFusion(), train_vision_encoder="full", train_language_model="full"
    )
    if vlm.image_token_id != config.image_token_id:
        raise ValueError(
            f"the tokenizer puts {IMAGE_TOKEN} at id {vlm.image_token_id} but the config's image_token_id is "
            f"{config.image_token_id}"
        )
    return vlm


def idefics2_config(vlm: VisionLanguageModel) -> Idefics2Config:
    """The ``Idefics2Config`` describing ``vlm`` (with its adapters merged).

    Raises:
        ValueError: If a part does not have Idefics2's shape (named, with the offending value).
    """
    from transformers import Idefics2Config
    from transformers.activations import ACT2FN

    from vlmkit.adapters import has_adapters

    encoder, connector, lm = vlm.vision_encoder, vlm.connector, vlm.language_model
    _check_shape(  # (part, its value, expected, holds): parts first, so the checks after them can read attributes
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
        ("connector", type(connector).__name__, "PerceiverResampler", isinstance(connector, PerceiverResampler)),
        ("language_model", type(lm).__name__, "TransformersCausalLM", isinstance(lm, TransformersCausalLM)),
    )
    text = copy.deepcopy(lm.model.config)
    text.vocab_size = lm.vocab_size
    text.use_cache = True
    projection, layer = connector.modality_projection, connector.layers[0]
    prefix = getattr(lm.model, "base_model_prefix", None)
    _check_shape(
        (
            "vision_encoder.position_embedding",
            encoder.position_embedding,
            "'bucket'",
            encoder.position_embedding == "bucket",
        ),
        ("vision_encoder.feature_layer", encoder.feature_layer, "-1", encoder.feature_layer == -1),
        ("vision_encoder.model_type", encoder.model_type, "an Idefics2 or SigLIP tower", encoder.model_type in _TOWERS),
        ("connector.projection", projection is not None, "True", projection is not None),
        ("the LM's base_model_prefix", prefix, "'model'", prefix == "model"),
    )
    intermediate, activation = text.intermediate_size, ACT2FN[text.hidden_act]
    _check_shape(
        ("connector.modality_projection.gated", projection.gated, "True", projection.gated),
        (
            "connector.projection_hidden_dim",
            projection.hidden_dim,
            f"the LM's intermediate_size {intermediate}",
            projection.hidden_dim == intermediate,
        ),
        (
            "connector.activation",
            type(projection.act_fn).__name__,
            f"the LM's hidden_act {text.hidden_act!r}",
            type(projection.act_fn) is type(activation),
        ),
        (
            "connector.mlp_ratio",
            layer.mlp.hidden_dim / connector.out_dim,
            "4",
            layer.mlp.hidden_dim == 4 * connector.out_dim,
        ),
    )
    backbone = encoder.backbone.config
    vision = {key: getattr(backbone, key) for key in _VISION_CONFIG_KEYS if hasattr(backbone, key)}
    perceiver = {
        "hidden_size": connector.out_dim,
        "hidden_act": text.hidden_act,
        "rms_norm_eps": connector.norm.eps,
        "resampler_n_latents": connector.num_latents,
        "resampler_depth": len(connector.layers),
        "resampler_n_heads": layer.self_attn.num_heads,
        "resampler_head_dim": layer.self_attn.head_dim,
        "num_key_value_heads": layer.self_attn.num_key_value_heads,
    }
    fake = vlm.tokenizer.convert_tokens_to_ids(FAKE_IMAGE_TOKEN)
    config = Idefics2Config(
        vision_config=vision,
        perceiver_config=perceiver,
        text_config=text.to_dict(),
        image_token_id=vlm.image_token_id,
        tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
    )
    config.architectures = ["Idefics2ForConditionalGeneration"]
    config.pad_token_id = vlm.tokenizer.pad_token_id
    _check_shape(
        ("the tokenizer's " + FAKE_IMAGE_TOKEN, fake, "a token id", fake not in (None, vlm.tokenizer.unk_token_id))
    )
    return config


def _check_shape(*checks: tuple[str, Any, str, bool]) -> None:
    """Raise on the first ``(what, got, expected, holds)`` that does not hold."""
    for what, got, expected, holds in checks:
        if not holds:
            raise ValueError(f"not exportable as Idefics2: {what} is {got!r}, expected {expected}")
