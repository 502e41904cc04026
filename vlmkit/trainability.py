"""Trainability declared at composition: each part is ``frozen``, ``full``, or adapted (``lora``/``dora``).

What trains is decided when the model is composed, never in the training loop;
the optimizer later simply takes the parameters with ``requires_grad``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

from torch import nn

from vlmkit.adapters import LoRA, add_trainable_rows, inject_lora

TrainabilityMode = Literal["frozen", "full", "lora", "dora"]
"""How a pretrained part is trained: not at all, every weight, or through LoRA/DoRA adapters (default settings)."""

Trainability = TrainabilityMode | LoRA
"""A mode name, or a :class:`~vlmkit.adapters.LoRA` with explicit rank, alpha, dropout, targets."""


def apply_trainability(
    module: nn.Module,
    mode: Trainability,
    argument: str,
    trainable_tokens: dict[str, list[int]] | None = None,
    quantization: str | None = None,
) -> None:
    """Make ``module`` frozen, fully trainable, or adapted, in place.

    Args:
        module: A pretrained part.
        mode: ``"frozen"``, ``"full"``, ``"lora"``, ``"dora"`` or a :class:`~vlmkit.adapters.LoRA`.
        argument: The argument name, for error messages.
        trainable_tokens: Embedding/output layer names of ``module`` mapped to rows that train even when the
            rest is frozen or adapted (the VLM's new special tokens).
        quantization: The part's declared ``quantization`` (its weights are 4-/8-bit): it cannot train in full.

    Raises:
        ValueError: Naming ``argument`` for an unknown mode, or for full training of a quantized part.
    """
    if mode == "lora":
        mode = LoRA()
    elif mode == "dora":
        mode = LoRA(use_dora=True)
    if isinstance(mode, LoRA):
        inject_lora(module, mode, trainable_tokens)
        return
    if mode not in get_args(TrainabilityMode):
        raise ValueError(f"{argument}={mode!r}; expected one of {list(get_args(TrainabilityMode))} or a LoRA")
    if mode == "full" and quantization:
        raise ValueError(
            f"{argument}='full' on a {quantization}-quantized part: quantized weights cannot be trained; "
            "use 'lora'/'dora' (QLoRA) or 'frozen'"
        )
    module.requires_grad_(mode == "full")
    if mode == "frozen" and trainable_tokens:
        add_trainable_rows(module, trainable_tokens)


def apply_activation_checkpointing(model: nn.Module, block_classes: tuple[type[nn.Module], ...]) -> int:
    """Wrap every instance of ``block_classes`` so its activations are recomputed in backward (non-reentrant).

    vlmkit's one activation-checkpointing switch: ``VisionLanguageModel(gradient_checkpointing=True)`` and
    ``FullyShard(activation_checkpointing=True)`` both come here. A block already wrapped is left as it is, so no
    block is ever checkpointed twice (nested, the two recomputations run its forward three times per step).
    State-dict keys are unchanged (torch's checkpoint wrapper strips its prefix).

    Returns:
        How many blocks were wrapped by this call.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointWrapper,
        checkpoint_wrapper,
    )

    wrapped = {id(m._checkpoint_wrapped_module) for m in model.modules() if isinstance(m, CheckpointWrapper)}
    count = 0
    for name, module in list(model.named_modules()):
        if name and isinstance(module, block_classes) and id(module) not in wrapped:
            model.set_submodule(name, checkpoint_wrapper(module))
            count += 1
    return count


def is_checkpointed(model: nn.Module) -> bool:
    """Whether a block of ``model`` already recomputes its activations (:func:`apply_activation_checkpointing`)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    return any(isinstance(m, CheckpointWrapper) for m in model.modules())


@contextmanager
def temporarily_frozen(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with every parameter's ``requires_grad`` off, each restored on exit (not a trainability change).

    For measurements that run without autograd: torch's module tracker (under ``FlopCounterMode``) fails on
    trainable parameters used under ``no_grad`` or inference mode.
    """
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def parameter_table(model: nn.Module, parts: tuple[str, ...]) -> str:
    """A text table of total and trainable parameters for each named child part.

    Args:
        model: The composed model.
        parts: Names of its child modules to list (missing ones are skipped).

    Returns:
        Rows ``part | parameters | trainable``, plus a total row.
    """
    rows = [("part", "parameters", "trainable")]
    for part in parts:
        module = getattr(model, part, None)
        if isinstance(module, nn.Module):
            rows.append((part, f"{count_parameters(module):,}", f"{count_parameters(module, True):,}"))
    rows.append(("total", f"{count_parameters(model):,}", f"{count_parameters(model, True):,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}" for row in rows)
