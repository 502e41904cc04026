"""The config side of the Idefics2 correspondence: an ``Idefics2Config`` <-> vlmkit parts.

``idefics2_skeleton`` builds the parts an Idefics2 config describes (weights come later, from the checkpoint);
``idefics2_config`` describes a composed model as an ``Idefics2Config`` after checking, part by part, that it has
Idefics2's shape, and names the first part that does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlmkit.connectors.perceiver import PerceiverResampler
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
    from transformers import Idefics2Config

__all__ = ["idefics2_config", "idefics2_skeleton"]


def idefics2_skeleton(
    config: Idefics2Config, tokenizer: str, attn_implementation: str | None = "sdpa", patch_packing: bool = False
) -> VisionLanguageModel:
    """The vlmkit model of an Idefics2 config, randomly initialised (use ``torch.device("meta")`` for no memory).

    Args:
        config: An ``Idefics2Config``.
        tokenizer: Tokenizer path or name (``"synthetic"`` for the offline one); it must hold the image tokens at
            ids below ``text_config.vocab_size``, and ``<image>`` at ``config.image_token_id``.
        attn_implementation: Attention kernel of the vision tower and the text model.
        patch_packing: Run the vision tower on the real patches of all images as one sequence (NaViT-style).

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
    encoder = vision_encoder_from_config(vision, "idefics2_vision", attn_implementation, patch_packing)
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
    tied = bool(getattr(config, "tie_word_embeddings", False))
    lm = language_model_from_config(text, tied, tokenizer, attn_implementation)
    # "full": plain parameters with the checkpoint's keys (no adapter or trainable-token wrappers)
    vlm = VisionLanguageModel(
        encoder, connector, lm, FullyAutoregressiveFusion(), train_vision_encoder="full", train_language_model="full"
    )
    check_image_token(vlm, config.image_token_id)
    return vlm


def idefics2_config(vlm: VisionLanguageModel) -> Idefics2Config:
    """The ``Idefics2Config`` describing ``vlm`` (with its adapters merged).

    Raises:
        ValueError: If a part does not have Idefics2's shape (named, with the offending value).
    """
    from transformers import Idefics2Config
    from transformers.activations import ACT2FN

    vision, text = common_parts_config(vlm, "Idefics2", PerceiverResampler)
    connector = vlm.connector
    projection, layer = connector.modality_projection, connector.layers[0]
    check_shape("Idefics2", ("connector.projection", projection is not None, "True", projection is not None))
    intermediate, activation = text.intermediate_size, ACT2FN[text.hidden_act]
    check_shape(
        "Idefics2",
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
    config = Idefics2Config(
        vision_config=vision,
        perceiver_config=perceiver,
        text_config=text.to_dict(),
        image_token_id=vlm.image_token_id,
        tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
    )
    config.architectures = ["Idefics2ForConditionalGeneration"]
    config.pad_token_id = vlm.tokenizer.pad_token_id
    return config
