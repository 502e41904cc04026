"""Import and export transformers Idefics2 checkpoints (``Idefics2ForConditionalGeneration``).

An Idefics2 checkpoint is exactly a vlmkit composition: ``TransformersVisionEncoder`` (its vision tower, bucketed
positions), ``PerceiverResampler`` with the gated-MLP modality projection, ``FullyAutoregressiveFusion`` and a
``TransformersCausalLM`` (Mistral), so import and export are a pure renaming of weights plus the configs. Every weight
is mapped in both directions and anything left over is an error. The checkpoint's own tokenizer is kept, so the ids
of ``<fake_token_around_image>``, ``<image>`` and ``<end_of_utterance>`` are the checkpoint's.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping

import torch
from torch import nn

from vlmkit.interop.idefics2_config import idefics2_config, idefics2_skeleton
from vlmkit.interop.idefics2_processing import Idefics2ProcessorSettings
from vlmkit.llm.transformers_lm import parse_dtype
from vlmkit.model import VisionLanguageModel
from vlmkit.trainability import Trainability

__all__ = ["export_idefics2", "idefics2_to_vlmkit_keys", "import_idefics2", "vlmkit_to_idefics2_keys"]

# (transformers prefix, vlmkit prefix), most specific first
_PREFIXES = (
    ("model.vision_model.", "vision_encoder.backbone."),
    ("model.connector.modality_projection.", "connector.modality_projection."),
    ("model.connector.perceiver_resampler.", "connector."),
    ("model.text_model.", "language_model.model.model."),
    ("lm_head.", "language_model.model.lm_head."),
)
# vlmkit vision weights with no Idefics2 counterpart: SigLIP's attention-pooling head (unused by vlmkit's forward)
_UNUSED_VISION_PREFIXES = ("vision_encoder.backbone.head.",)


def idefics2_to_vlmkit_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``Idefics2ForConditionalGeneration`` state dict to ``VisionLanguageModel`` keys.

    Raises:
        KeyError: Listing the keys that belong to no known part.
    """
    return _rename(state_dict, [(hf, ours) for hf, ours in _PREFIXES], "Idefics2")


def vlmkit_to_idefics2_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``VisionLanguageModel`` state dict (of the Idefics2 shape) to ``Idefics2ForConditionalGeneration`` keys.

    SigLIP's pooling head (``vision_encoder.backbone.head.*``), which vlmkit never runs, is dropped.

    Raises:
        KeyError: Listing the keys that belong to no known part.
    """
    kept = {k: v for k, v in state_dict.items() if not k.startswith(_UNUSED_VISION_PREFIXES)}
    return _rename(kept, [(ours, hf) for hf, ours in _PREFIXES], "vlmkit")


def _rename(state_dict: Mapping[str, torch.Tensor], prefixes: list[tuple[str, str]], source: str) -> dict:
    renamed, unknown = {}, []
    for key, value in state_dict.items():
        for old, new in prefixes:
            if key.startswith(old):
                renamed[new + key.removeprefix(old)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"{len(unknown)} {source} weights map to no Idefics2 part, e.g. {sorted(unknown)[:8]}")
    return renamed


def import_idefics2(
    path_or_name: str,
    train_vision_encoder: Trainability = "frozen",
    train_language_model: Trainability = "frozen",
    neftune_alpha: float = 0.0,
    gradient_checkpointing: bool = False,
    torch_dtype: str | None = None,
    attn_implementation: str | None = "sdpa",
) -> VisionLanguageModel:
    """Build a :class:`VisionLanguageModel` from a transformers Idefics2 checkpoint, every weight mapped.

    The parts are built from the checkpoint's configs (vision tower with Idefics2's bucketed positions, perceiver
    with the MLP modality projection, fully autoregressive fusion, the text model), then all weights are loaded
    strictly. The tokenizer is the checkpoint's, so the image token ids are its own; the encoder's normalisation
    is set from the image processor config (see :class:`Idefics2ProcessorSettings` for the other image settings).
    Usable from YAML as ``vlm: {class_path: vlmkit.interop.import_idefics2, init_args: {path_or_name: ...}}``.

    Args:
        path_or_name: Local checkpoint directory, or a hub name on machines with network.
        train_vision_encoder: Trainability of the vision tower.
        train_language_model: Trainability of the text model (``"dora"`` for Idefics2's instruction tuning).
        neftune_alpha: NEFTune noise scale in training (paper section 4.2: used in instruction tuning); 0 disables.
        gradient_checkpointing: Recompute the activations of every repeated block in the backward pass.
        torch_dtype: Weight dtype name (``"bfloat16"``, ``"float32"``); ``None`` keeps the checkpoint's.
        attn_implementation: Attention kernel of the vision tower and the text model.

    Returns:
        The model; its ``forward`` logits equal ``Idefics2ForConditionalGeneration``'s (fp32, within 1e-4).

    Raises:
        ValueError: If the checkpoint is not an Idefics2 checkpoint, its tokenizer and config disagree on the
            image token id or the vocabulary, or a weight is missing or unexpected (named).
    """
    from transformers import AutoConfig, Idefics2ForConditionalGeneration

    config = AutoConfig.from_pretrained(path_or_name, trust_remote_code=False)
    if config.model_type != "idefics2":
        raise ValueError(f"{path_or_name!r} holds a {config.model_type!r} checkpoint, not 'idefics2'")
    settings = Idefics2ProcessorSettings.from_pretrained(path_or_name)
    reference = Idefics2ForConditionalGeneration.from_pretrained(
        path_or_name, dtype=parse_dtype(torch_dtype) or "auto", use_safetensors=True, trust_remote_code=False
    )
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        vlm = idefics2_skeleton(config, tokenizer=path_or_name, attn_implementation=attn_implementation)
    _load_strict(vlm, idefics2_to_vlmkit_keys(reference.state_dict()), path_or_name)
    _take_buffers(vlm, idefics2_to_vlmkit_keys(dict(reference.named_buffers())), path_or_name)
    del reference
    if config.text_config.tie_word_embeddings:  # loaded as two parameters: one again
        vlm.language_model.model.tie_weights()
    vlm.vision_encoder.image_mean, vlm.vision_encoder.image_std = settings.image_mean, settings.image_std
    return VisionLanguageModel(  # composed again from the loaded parts: adapters wrap the checkpoint's weights
        vlm.vision_encoder,
        vlm.connector,
        vlm.language_model,
        vlm.fusion,
        train_vision_encoder=train_vision_encoder,
        train_language_model=train_language_model,
        neftune_alpha=neftune_alpha,
        gradient_checkpointing=gradient_checkpointing,
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
    from huggingface_hub import save_torch_state_dict
    from transformers import GenerationConfig

    _merge_adapters(vlm)
    config = idefics2_config(vlm)
    config.dtype = next(vlm.parameters()).dtype  # from_pretrained(dtype="auto") gives back the trained dtype
    state_dict = vlmkit_to_idefics2_keys(vlm.state_dict())
    os.makedirs(output_dir, exist_ok=True)
    config.save_pretrained(output_dir)
    state_dict = {key: value.detach().contiguous() for key, value in state_dict.items()}
    save_torch_state_dict(state_dict, output_dir, max_shard_size=max_shard_size, safe_serialization=True)
    tokenizer = vlm.tokenizer
    stops = [t for t in (tokenizer.eos_token_id, *vlm.stop_token_ids) if t is not None]
    GenerationConfig(  # generate() stops where vlmkit's does: EOS or <end_of_utterance>
        bos_token_id=tokenizer.bos_token_id, eos_token_id=sorted(set(stops)), pad_token_id=tokenizer.pad_token_id
    ).save_pretrained(output_dir)
    settings = settings or Idefics2ProcessorSettings(
        image_mean=vlm.vision_encoder.image_mean, image_std=vlm.vision_encoder.image_std
    )
    settings.processor(copy.deepcopy(tokenizer), image_seq_len=vlm.connector.num_latents).save_pretrained(output_dir)


def _load_strict(vlm: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load every weight of ``vlm`` from ``state_dict``; anything missing or left over is an error."""
    expected = set(vlm.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source}: {len(missing)} vlmkit weights have no checkpoint weight (e.g. {missing[:6]}) and "
            f"{len(unexpected)} checkpoint weights have no vlmkit weight (e.g. {unexpected[:6]})"
        )
    with torch.no_grad():
        for name, tensor in vlm.state_dict().items():
            if tensor.shape != state_dict[name].shape:
                raise ValueError(
                    f"{source}: {name} has shape {tuple(state_dict[name].shape)}, vlmkit expects {tuple(tensor.shape)}"
                )
    vlm.load_state_dict(state_dict, strict=True, assign=True)


def _take_buffers(vlm: nn.Module, buffers: dict[str, torch.Tensor], source: str) -> None:
    """Fill the buffers that are not in a state dict (e.g. rotary ``inv_freq``) from the checkpoint's model."""
    for name, buffer in list(vlm.named_buffers()):
        if buffer.is_meta:
            if name not in buffers:
                raise ValueError(f"{source}: no value for the vlmkit buffer {name}")
            module_name, _, buffer_name = name.rpartition(".")
            vlm.get_submodule(module_name)._buffers[buffer_name] = buffers[name]


def _merge_adapters(vlm: nn.Module) -> None:
    """Merge LoRA/DoRA layers and trainable-token rows into their base weights, in place."""
    from vlmkit.adapters import has_adapters, merge_adapters

    if has_adapters(vlm):
        merge_adapters(vlm)
    if has_adapters(vlm):
        raise ValueError("adapters are left in the model after merge_adapters; cannot export plain weights")
