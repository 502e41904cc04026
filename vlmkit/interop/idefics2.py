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
from typing import TYPE_CHECKING

import torch
from torch import nn

from vlmkit.dtypes import parse_dtype
from vlmkit.interop.idefics2_config import idefics2_config, idefics2_skeleton
from vlmkit.interop.idefics2_processing import (
    IDEFICS2_CHAT_TEMPLATE,
    Idefics2ProcessorSettings,
    checkpoint_chat_template,
    checkpoint_generation_config,
    checkpoint_stop_token_ids,
)
from vlmkit.interop.safetensors_checkpoint import SafetensorsCheckpoint
from vlmkit.model import VisionLanguageModel
from vlmkit.trainability import Trainability

if TYPE_CHECKING:
    from transformers import GenerationConfig

logger = logging.getLogger(__name__)

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
        torch_dtype: Weight dtype name (``"bfloat16"``, ``"float32"``); ``None`` keeps the checkpoint's.
        attn_implementation: Attention kernel of the vision tower and the text model.

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
        vlm = idefics2_skeleton(config, tokenizer=path_or_name, attn_implementation=attn_implementation)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    names = _match_checkpoint(vlm, checkpoint, tied)
    state_dict = {names[key]: value for key, value in checkpoint.load(names, parse_dtype(torch_dtype)).items()}
    lm = vlm.language_model.model
    if tied:
        _tie_output_embeddings(state_dict, lm, checkpoint.source)
    vlm.load_state_dict(state_dict, strict=True, assign=True)
    _init_non_persistent_buffers(vlm, checkpoint.source)
    if tied:  # loaded as two parameters: one again
        lm.tie_weights()
    vlm.vision_encoder.image_mean, vlm.vision_encoder.image_std = settings.image_mean, settings.image_std
    generation_config = checkpoint_generation_config(path_or_name)
    if generation_config is not None:
        lm.generation_config = generation_config  # what export compares its generation config with
    return VisionLanguageModel(  # composed again from the loaded parts: adapters wrap the checkpoint's weights
        vlm.vision_encoder,
        vlm.connector,
        vlm.language_model,
        vlm.fusion,
        train_vision_encoder=train_vision_encoder,
        train_language_model=train_language_model,
        neftune_alpha=neftune_alpha,
        gradient_checkpointing=gradient_checkpointing,
        chat_template=checkpoint_chat_template(path_or_name),
        stop_token_ids=checkpoint_stop_token_ids(generation_config, vlm.tokenizer),
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
    generation_config = GenerationConfig(  # generate() stops where vlmkit's does: EOS and <end_of_utterance>
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=list(vlm.stop_token_ids),
        pad_token_id=tokenizer.pad_token_id,
    )
    _log_generation_changes(getattr(vlm.language_model.model, "generation_config", None), generation_config)
    generation_config.save_pretrained(output_dir)
    if vlm.chat_template is None:
        logger.warning(
            "export: the model was trained on vlmkit's own chat layout (`User:` directly followed by the text, no "
            "space after an image block); the exported processor renders Idefics2's chat template, whose text "
            "differs in these spaces (import with vlmkit.interop.import_idefics2 to fine-tune on Idefics2's text)"
        )
    settings = settings or Idefics2ProcessorSettings(
        image_mean=vlm.vision_encoder.image_mean, image_std=vlm.vision_encoder.image_std
    )
    processor = settings.processor(
        copy.deepcopy(tokenizer), vlm.connector.num_latents, vlm.chat_template or IDEFICS2_CHAT_TEMPLATE
    )
    processor.save_pretrained(output_dir)


def _log_generation_changes(source: GenerationConfig | None, written: GenerationConfig) -> None:
    """Log where the exported generation config's EOS list or pad token differ from the model's own."""
    if source is None:
        return

    def as_set(ids: int | list[int] | None) -> set[int]:
        return {ids} if isinstance(ids, int) else set(ids or [])

    if as_set(source.eos_token_id) != as_set(written.eos_token_id):
        logger.warning(
            "export: generation_config eos_token_id is %s (the tokens vlmkit stops at: EOS and <end_of_utterance>); "
            "the model's generation config had %s",
            written.eos_token_id,
            source.eos_token_id,
        )
    if source.pad_token_id != written.pad_token_id:
        logger.warning(
            "export: generation_config pad_token_id is %s (the tokenizer's pad token); the model's generation "
            "config had %s",
            written.pad_token_id,
            source.pad_token_id,
        )


def _match_checkpoint(vlm: nn.Module, checkpoint: SafetensorsCheckpoint, tied: bool) -> dict[str, str]:
    """Checkpoint tensor name -> vlmkit weight name, for every tensor; raise naming every mismatch.

    Tensors of the model's non-persistent buffers (rotary ``inv_freq`` of old checkpoints) are accepted and not
    loaded: the buffers are computed from the config, as transformers does.
    """
    expected = {name: tuple(tensor.shape) for name, tensor in vlm.state_dict().items()}
    buffers = {
        f"{module_name}.{name}" if module_name else name
        for module_name, module in vlm.named_modules()
        for name in module._non_persistent_buffers_set
    }
    lm_head = _vlmkit_name("lm_head.weight")
    names, unmapped, misshapen = {}, [], []
    for key, shape in sorted(checkpoint.shapes.items()):
        ours = _vlmkit_name(key)
        if ours in buffers:
            continue
        if ours not in expected:
            unmapped.append(key)
        elif shape != expected[ours]:
            misshapen.append(f"{key} {shape} (the model's is {expected[ours]})")
        else:
            names[key] = ours
    found = set(names.values()) | {_vlmkit_name(key) for key in checkpoint.shapes}
    missing = sorted(_idefics2_name(name) for name in expected if name not in found and not (tied and name == lm_head))
    problems = [
        f"{len(items)} {what}: {', '.join(items)}"
        for items, what in (
            (unmapped, "checkpoint tensors map to no model weight"),
            (missing, "model weights are not in the checkpoint"),
            (misshapen, "tensors have the wrong shape"),
        )
        if items
    ]
    if problems:
        raise ValueError(
            f"{checkpoint.source} does not match its Idefics2 config (nothing was loaded): " + "; ".join(problems)
        )
    return names


def _tie_output_embeddings(state_dict: dict[str, torch.Tensor], lm: nn.Module, source: str) -> None:
    """Fill the tied ``lm_head.weight`` with the embeddings.

    A different ``lm_head.weight`` in the checkpoint is an error (transformers would silently not tie them).
    """
    lm_head, embeddings = _vlmkit_name("lm_head.weight"), _vlmkit_name("model.text_model.embed_tokens.weight")
    if lm_head in state_dict and not torch.equal(state_dict[lm_head], state_dict[embeddings]):
        raise ValueError(
            f"{source}: the config ties lm_head.weight to model.text_model.embed_tokens.weight "
            "(tie_word_embeddings=true) but the checkpoint holds a different lm_head.weight; set "
            "tie_word_embeddings=false in config.json or remove the tensor"
        )
    state_dict[lm_head] = state_dict[embeddings]


def _init_non_persistent_buffers(vlm: nn.Module, source: str) -> None:
    """Compute the buffers no checkpoint holds (rotary ``inv_freq``) with transformers' own initialisation."""
    from transformers import PreTrainedModel

    owners = {name: module for name, module in vlm.named_modules() if isinstance(module, PreTrainedModel)}
    for name, module in vlm.named_modules():
        meta = [key for key, buffer in module._buffers.items() if buffer is not None and buffer.is_meta]
        if not meta:
            continue
        owner = max((o for o in owners if name.startswith(f"{o}.") or not o), key=len, default=None)
        if owner is None or next(module.parameters(recurse=False), None) is not None:
            raise ValueError(f"{source}: no value for the vlmkit buffers {[f'{name}.{key}' for key in meta]}")
        for key in meta:
            module._buffers[key] = torch.full_like(module._buffers[key], float("nan"), device="cpu")
        owners[owner]._init_weights(module)
        unset = [key for key in meta if module._buffers[key].isnan().any()]
        if unset:
            raise ValueError(f"{source}: transformers does not initialise the buffers {name}.{unset}")


def _vlmkit_name(key: str) -> str | None:
    """The vlmkit name of an Idefics2 weight name; ``None`` if no part has its prefix."""
    for hf, ours in _PREFIXES:
        if key.startswith(hf):
            return ours + key.removeprefix(hf)
    return None


def _idefics2_name(name: str) -> str:
    """The Idefics2 name of a vlmkit weight name of an Idefics2-shaped model."""
    for hf, ours in _PREFIXES:
        if name.startswith(ours):
            return hf + name.removeprefix(ours)
    return name


def _merge_adapters(vlm: nn.Module) -> None:
    """Merge LoRA/DoRA layers and trainable-token rows into their base weights, in place."""
    from vlmkit.adapters import has_adapters, merge_adapters

    if has_adapters(vlm):
        merge_adapters(vlm)
    if has_adapters(vlm):
        raise ValueError("adapters are left in the model after merge_adapters; cannot export plain weights")
