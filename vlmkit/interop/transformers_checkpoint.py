"""What importing and exporting a transformers VLM checkpoint share, whatever the family (Idefics2, Idefics3, SmolVLM).

A family is a :class:`KeyMap`: transformers' weight prefixes and vlmkit's, most specific first. Import builds the
parts on the ``meta`` device, matches every tensor of the safetensors headers against the model before loading
anything (:func:`load_strictly`: every unmapped, missing and misshapen tensor is named; nothing is initialised at
random), then loads the tensors straight from the files. Export merges adapters, renames the weights back and writes
them with a generation config that stops where vlmkit does (:func:`write_weights`, :func:`write_generation_config`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vlmkit.interop.safetensors_checkpoint import SafetensorsCheckpoint

if TYPE_CHECKING:
    from transformers import GenerationConfig

    from vlmkit.model import VisionLanguageModel

logger = logging.getLogger(__name__)

__all__ = [
    "KeyMap",
    "compose_imported",
    "load_strictly",
    "merge_for_export",
    "write_checkpoint",
    "write_generation_config",
    "write_weights",
]


@dataclass(frozen=True)
class KeyMap:
    """The weight names of one checkpoint family in transformers and in vlmkit.

    Attributes:
        family: The family's name, for messages (``"Idefics2"``).
        prefixes: ``(transformers prefix, vlmkit prefix)`` pairs, most specific first.
        unused: vlmkit prefixes of weights the family has no place for and export drops (SigLIP's pooling head).
    """

    family: str
    prefixes: tuple[tuple[str, str], ...]
    unused: tuple[str, ...] = ()

    def vlmkit_name(self, key: str) -> str | None:
        """The vlmkit name of a transformers weight name; ``None`` if no part has its prefix."""
        for theirs, ours in self.prefixes:
            if key.startswith(theirs):
                return ours + key.removeprefix(theirs)
        return None

    def transformers_name(self, name: str) -> str:
        """The transformers name of a vlmkit weight name (``name`` itself if no part has its prefix)."""
        for theirs, ours in self.prefixes:
            if name.startswith(ours):
                return theirs + name.removeprefix(ours)
        return name

    def to_vlmkit(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename a transformers state dict to vlmkit keys.

        Raises:
            KeyError: Listing the keys that belong to no known part.
        """
        return self._rename(state_dict, [(theirs, ours) for theirs, ours in self.prefixes], self.family)

    def to_transformers(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename a vlmkit state dict to transformers keys, dropping the :attr:`unused` weights.

        Raises:
            KeyError: Listing the keys that belong to no known part.
        """
        kept = {k: v for k, v in state_dict.items() if not k.startswith(self.unused)} if self.unused else state_dict
        return self._rename(kept, [(ours, theirs) for theirs, ours in self.prefixes], "vlmkit")

    def _rename(self, state_dict: Mapping[str, torch.Tensor], prefixes: list[tuple[str, str]], source: str) -> dict:
        renamed, unknown = {}, []
        for key, value in state_dict.items():
            for old, new in prefixes:
                if key.startswith(old):
                    renamed[new + key.removeprefix(old)] = value
                    break
            else:
                unknown.append(key)
        if unknown:
            raise KeyError(f"{len(unknown)} {source} weights map to no {self.family} part, e.g. {sorted(unknown)[:8]}")
        return renamed


def load_strictly(
    vlm: VisionLanguageModel,
    checkpoint: SafetensorsCheckpoint,
    key_map: KeyMap,
    tied: bool,
    dtype: torch.dtype | None = None,
) -> None:
    """Load every tensor of ``checkpoint`` into ``vlm`` (built on ``meta``), in place, after matching all of them.

    Args:
        vlm: The model of the checkpoint's config, its parameters on ``meta`` and under plain keys.
        checkpoint: The safetensors files.
        key_map: The family's names.
        tied: The config ties ``lm_head.weight`` to the embeddings: the checkpoint may omit it, and if it holds one,
            it must equal the embeddings.
        dtype: Cast floating tensors to it; ``None``: the checkpoint's dtype.

    Raises:
        ValueError: Naming every checkpoint tensor that maps to no model weight, every model weight the checkpoint
            lacks and every shape mismatch (nothing is loaded then); a tied head that differs; a buffer transformers
            does not initialise.
    """
    names = _match(vlm, checkpoint, key_map, tied)
    state_dict = {names[key]: value for key, value in checkpoint.load(names, dtype).items()}
    lm = vlm.language_model.model
    if tied:
        _tie_output_embeddings(state_dict, key_map, checkpoint.source)
    vlm.load_state_dict(state_dict, strict=True, assign=True)
    _init_non_persistent_buffers(vlm, checkpoint.source)
    if tied:  # loaded as two parameters: one again
        lm.tie_weights()


def compose_imported(
    vlm: VisionLanguageModel,
    path_or_name: str,
    image_mean: tuple[float, float, float],
    image_std: tuple[float, float, float],
    default_chat_template: str,
    family: str,
    tile_size: int | None = None,
    **trainability: Any,
) -> VisionLanguageModel:
    """The loaded parts of a checkpoint composed again, with the checkpoint's own text and generation settings.

    The encoder gets the processor's normalisation; the model keeps the checkpoint's chat template (else
    ``default_chat_template``, logged) and stops at its ``generation_config`` EOS tokens plus ``<end_of_utterance>``;
    the text model keeps the generation config (what export compares its own with). Adapters asked for in
    ``trainability`` (``VisionLanguageModel``'s ``train_*``, ``neftune_alpha``, ``gradient_checkpointing``) wrap the
    checkpoint's weights.
    """
    from vlmkit.interop.idefics2_processing import (
        checkpoint_chat_template,
        checkpoint_generation_config,
        checkpoint_stop_token_ids,
    )
    from vlmkit.model import VisionLanguageModel

    vlm.vision_encoder.image_mean, vlm.vision_encoder.image_std = image_mean, image_std
    generation_config = checkpoint_generation_config(path_or_name)
    if generation_config is not None:
        vlm.language_model.model.generation_config = generation_config
    return VisionLanguageModel(
        vlm.vision_encoder,
        vlm.connector,
        vlm.language_model,
        vlm.fusion,
        chat_template=checkpoint_chat_template(path_or_name, default_chat_template, family),
        stop_token_ids=checkpoint_stop_token_ids(generation_config, vlm.tokenizer),
        tile_size=tile_size,
        **trainability,
    )


def write_checkpoint(
    vlm: VisionLanguageModel, config: Any, key_map: KeyMap, output_dir: str | os.PathLike, max_shard_size: str
) -> None:
    """Write ``vlm`` (adapters merged) with ``config``: ``config.json``, safetensors, ``generation_config.json``.

    The config records the weights' dtype (``from_pretrained(dtype="auto")`` gives back the trained dtype); a
    model trained on vlmkit's own chat layout is logged, as the exported processor renders a checkpoint template.
    """
    config.dtype = next(vlm.parameters()).dtype
    tied = bool(getattr(config, "tie_word_embeddings", False))
    write_weights(key_map.to_transformers(vlm.state_dict()), output_dir, max_shard_size, tied)
    config.save_pretrained(output_dir)
    write_generation_config(vlm, output_dir)
    if vlm.chat_template is None:
        logger.warning(
            "export: the model was trained on vlmkit's own chat layout (`User:` directly followed by the text, no "
            "space after an image block); the exported processor renders %s's chat template, whose text differs "
            "from it (import a checkpoint, or give VisionLanguageModel a chat_template, to train on that text)",
            key_map.family,
        )


def merge_for_export(vlm: nn.Module) -> None:
    """Merge LoRA/DoRA layers and trainable-token rows into their base weights, in place.

    Raises:
        ValueError: If adapters are left after merging.
    """
    from vlmkit.adapters import has_adapters, merge_adapters

    if has_adapters(vlm):
        merge_adapters(vlm)
    if has_adapters(vlm):
        raise ValueError("adapters are left in the model after merge_adapters; cannot export plain weights")


def write_weights(
    state_dict: Mapping[str, torch.Tensor], output_dir: str | os.PathLike, max_shard_size: str, tied: bool = False
) -> None:
    """Write ``state_dict`` (transformers names) as ``model.safetensors``, or shards above ``max_shard_size``.

    With ``tied`` embeddings ``lm_head.weight`` is left out, as transformers saves a tied head (the files would
    otherwise keep only one of the two names of the shared tensor, whichever the writer picks).
    """
    from huggingface_hub import save_torch_state_dict

    os.makedirs(output_dir, exist_ok=True)
    tensors = {
        key: value.detach().contiguous() for key, value in state_dict.items() if not (tied and key == "lm_head.weight")
    }
    save_torch_state_dict(tensors, output_dir, max_shard_size=max_shard_size, safe_serialization=True)


def write_generation_config(vlm: VisionLanguageModel, output_dir: str | os.PathLike) -> None:
    """Write a ``generation_config.json`` whose EOS list is where vlmkit stops and whose pad token is the tokenizer's.

    Where these differ from the model's own generation config (an imported checkpoint's), the log says so.
    """
    from transformers import GenerationConfig

    tokenizer = vlm.tokenizer
    generation_config = GenerationConfig(  # generate() stops where vlmkit's does: EOS and <end_of_utterance>
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=list(vlm.stop_token_ids),
        pad_token_id=tokenizer.pad_token_id,
    )
    _log_generation_changes(getattr(vlm.language_model.model, "generation_config", None), generation_config)
    generation_config.save_pretrained(output_dir)


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


def _match(vlm: nn.Module, checkpoint: SafetensorsCheckpoint, key_map: KeyMap, tied: bool) -> dict[str, str]:
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
    lm_head = key_map.vlmkit_name("lm_head.weight")
    names, unmapped, misshapen = {}, [], []
    for key, shape in sorted(checkpoint.shapes.items()):
        ours = key_map.vlmkit_name(key)
        if ours in buffers:
            continue
        if ours not in expected:
            unmapped.append(key)
        elif shape != expected[ours]:
            misshapen.append(f"{key} {shape} (the model's is {expected[ours]})")
        else:
            names[key] = ours
    found = set(names.values()) | {key_map.vlmkit_name(key) for key in checkpoint.shapes}
    missing = sorted(
        key_map.transformers_name(name) for name in expected if name not in found and not (tied and name == lm_head)
    )
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
            f"{checkpoint.source} does not match its {key_map.family} config (nothing was loaded): "
            + "; ".join(problems)
        )
    return names


def _tie_output_embeddings(state_dict: dict[str, torch.Tensor], key_map: KeyMap, source: str) -> None:
    """Fill the tied ``lm_head.weight`` with the embeddings.

    A different ``lm_head.weight`` in the checkpoint is an error (transformers would silently not tie them).
    """
    lm_head = key_map.vlmkit_name("lm_head.weight")
    embeddings = key_map.vlmkit_name("model.text_model.embed_tokens.weight")
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
