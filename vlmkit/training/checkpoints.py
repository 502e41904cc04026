"""Model-weight checkpoints: stage-to-stage initialisation and trainable-only saving.

``load_model_weights`` starts a stage (e.g. instruction tuning) from the weights of an
earlier stage's Lightning checkpoint, without its optimizer, scheduler or step. Every
checkpoint key must land on a model key of the same shape (a LoRA-wrapped layer's
``base_layer`` is matched to the plain key); a key that lands nowhere is an error,
never dropped. ``drop_frozen`` / ``restore_frozen`` save only what trains and check, on
resume, that the keys missing from the checkpoint are exactly the frozen ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from vlmkit.errors import CheckpointError
from vlmkit.training.safe_loading import load_checkpoint

OMITTED_KEY = "vlmkit_omitted_frozen_keys"
"""Checkpoint entry listing the frozen state-dict keys left out by ``drop_frozen``."""


def _preview(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_model_state_dict(
    path: str | Path, prefix: str = "vlm.", trust: bool = False, opt_in: str = "pass trust=True"
) -> dict[str, torch.Tensor]:
    """The model weights of a Lightning checkpoint, keyed as in ``VisionLanguageModel.state_dict()``.

    Read without running code from the file (see :mod:`vlmkit.training.safe_loading`).

    Args:
        path: A Lightning ``.ckpt`` file, a consolidated file, or a sharded (distributed checkpoint)
            folder written by ``ModelParallelStrategy``.
        prefix: Prefix of the model's keys inside the checkpoint's ``state_dict`` (``VLMModule.vlm``).
        trust: Unpickle the file in full (runs any code it holds), with a warning.
        opt_in: How the caller's user passes ``trust``, for the error message.

    Returns:
        ``{key: tensor}`` with ``prefix`` removed.

    Raises:
        CheckpointNotFoundError: If ``path`` does not exist.
        UnsafeCheckpointError: If the file needs full unpickling and ``trust`` is off.
        CheckpointError: If the file is empty or truncated, holds no ``state_dict``, or keys outside ``prefix``.
    """
    checkpoint = load_checkpoint(
        path, trust=trust, opt_in=opt_in, what="init_from checkpoint", mmap=True, keys={"state_dict"}
    )
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no 'state_dict': not a Lightning checkpoint of a VLMModule")
    foreign = [key for key in state if not key.startswith(prefix)]
    if foreign:
        raise CheckpointError(f"{path}: keys outside '{prefix}' (not a VLMModule checkpoint?): {_preview(foreign)}")
    return {key[len(prefix) :]: value for key, value in state.items()}


def _target_key(key: str, model_keys: set[str]) -> str | None:
    """The model key a checkpoint key loads into: itself, or the ``base_layer`` of a LoRA-wrapped layer."""
    if key in model_keys:
        return key
    head, _, leaf = key.rpartition(".")
    wrapped = f"{head}.base_layer.{leaf}" if head else f"base_layer.{leaf}"
    return wrapped if wrapped in model_keys else None


def load_model_weights(
    model: nn.Module, path: str | Path, trust: bool = False, opt_in: str = "pass trust=True"
) -> list[str]:
    """Load the model weights of a Lightning checkpoint into ``model`` (no optimizer, scheduler or step).

    Args:
        model: The ``VisionLanguageModel`` to initialise (before sharding).
        path: See :func:`read_model_state_dict`.
        trust: Unpickle the file in full (runs any code it holds), with a warning.
        opt_in: How the caller's user passes ``trust``, for the error message.

    Returns:
        The model keys the checkpoint did not hold (left as built, e.g. new LoRA weights, or
        frozen weights of a trainable-only checkpoint that the model loaded from its own config).

    Raises:
        CheckpointError: Naming the keys of the checkpoint that match no model key or have another shape.
    """
    state = read_model_state_dict(path, trust=trust, opt_in=opt_in)
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unmatched, wrong_shape = [], []
    for key, value in state.items():
        target = _target_key(key, set(own))
        if target is None:
            unmatched.append(key)
        elif tuple(own[target].shape) != tuple(value.shape):
            wrong_shape.append(f"{key} {tuple(value.shape)} vs model {tuple(own[target].shape)}")
        else:
            mapped[target] = value
    if unmatched:
        raise CheckpointError(
            f"checkpoint {path}: {len(unmatched)} checkpoint keys match no model key: " + _preview(unmatched)
        )
    if wrong_shape:
        raise CheckpointError(f"checkpoint {path}: shapes differ from the model: {_preview(wrong_shape, 4)}")
    model.load_state_dict(mapped, strict=False)
    missing = sorted(set(own) - set(mapped))
    refreshed = _refresh_dora_magnitudes(model, set(mapped))
    rank_zero_info(
        f"loaded {len(mapped)} tensors from {path}"
        + (f"; {len(missing)} model keys not in the checkpoint, kept as built: {_preview(missing)}" if missing else "")
        + (f"; {refreshed} DoRA magnitudes recomputed from the loaded weights" if refreshed else "")
    )
    return missing


def _refresh_dora_magnitudes(model: nn.Module, loaded: set[str]) -> int:
    """Recompute new DoRA magnitude vectors from base weights that were just loaded.

    DoRA (peft) sets its magnitude to the column norms of the base weight when the adapter is injected,
    i.e. at composition, before ``init_from`` replaces the base weights; without this the adapted model
    would not start equal to the loaded one. Magnitudes that came from the checkpoint are kept.

    Returns:
        The number of magnitude vectors recomputed.
    """
    count = 0
    for name, module in model.named_modules():
        magnitudes = getattr(module, "lora_magnitude_vector", None)
        if not magnitudes or f"{name}.base_layer.weight" not in loaded:
            continue
        for adapter, layer in magnitudes.items():
            if f"{name}.lora_magnitude_vector.{adapter}.weight" in loaded:
                continue
            old = layer.weight
            layer.update_layer(
                base_layer=module.get_base_layer(),
                lora_A=module.lora_A[adapter].weight,
                lora_B=module.lora_B[adapter].weight,
                scaling=module.scaling[adapter],
            )
            with torch.no_grad():
                old.copy_(layer.weight)
            layer.weight = old  # keep the parameter object (and its requires_grad)
            count += 1
    return count


def frozen_state_keys(module: nn.Module) -> set[str]:
    """State-dict keys of ``module`` that hold frozen parameters (``requires_grad=False``); tied names included."""
    frozen = {id(p) for _, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}
    return {key for key, value in module.state_dict(keep_vars=True).items() if id(value) in frozen}


def drop_frozen(checkpoint: dict, module: nn.Module) -> None:
    """Remove the frozen parameters from ``checkpoint['state_dict']`` and record which were removed."""
    omitted = frozen_state_keys(module) & set(checkpoint["state_dict"])
    for key in omitted:
        del checkpoint["state_dict"][key]
    checkpoint[OMITTED_KEY] = sorted(omitted)


def restore_frozen(checkpoint: dict, module: nn.Module) -> None:
    """Fill the frozen keys a trainable-only checkpoint left out with ``module``'s own (pretrained) values.

    The keys missing from the checkpoint must be exactly the recorded ones, and all must still be
    frozen in ``module``; then loading stays strict for everything else.

    Raises:
        CheckpointError: If a missing key was not recorded as omitted, a recorded key is trainable now,
            or the recorded keys do not exist in the module.
    """
    omitted = checkpoint.get(OMITTED_KEY)
    if omitted is None:
        return
    own = module.state_dict()
    missing = set(own) - set(checkpoint["state_dict"])
    recorded = set(omitted)
    if missing != recorded:
        raise CheckpointError(
            "trainable-only checkpoint does not match the model: missing but not recorded as frozen: "
            f"[{_preview(missing - recorded)}]; recorded as omitted but not missing: [{_preview(recorded - missing)}]"
        )
    trainable_now = recorded - frozen_state_keys(module)
    if trainable_now:
        raise CheckpointError(
            "the checkpoint left out weights that were frozen when it was saved but train now "
            f"(they would restart from their initial values): {_preview(trainable_now)}"
        )
    for key in recorded:
        checkpoint["state_dict"][key] = own[key]
