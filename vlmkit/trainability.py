"""Trainability declared at composition: each part is ``frozen`` or ``full``.

What trains is decided when the model is composed, never in the training loop;
the optimizer later simply takes the parameters with ``requires_grad``.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

Trainability = Literal["frozen", "full"]
"""How a pretrained part is trained: not at all, or every weight."""


def apply_trainability(module: nn.Module, mode: Trainability, argument: str) -> None:
    """Set ``requires_grad`` on every parameter of ``module`` according to ``mode``.

    Raises:
        ValueError: Naming ``argument`` for an unknown mode.
    """
    if mode not in get_args(Trainability):
        raise ValueError(f"{argument}={mode!r}; expected one of {list(get_args(Trainability))}")
    module.requires_grad_(mode == "full")


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
