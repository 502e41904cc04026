"""Dtypes named in YAML (``torch_dtype: bfloat16``) turned into ``torch.dtype``s, with one error message."""

from __future__ import annotations

import torch


def parse_dtype(name: str | None, argument: str = "torch_dtype", allow_auto: bool = False) -> torch.dtype | str | None:
    """The ``torch.dtype`` named ``name`` (``"bfloat16"``, ``"float32"``); ``None`` (and ``"auto"`` if allowed) as is.

    Raises:
        ValueError: Naming ``argument`` when ``name`` is not a torch dtype name.
    """
    if name is None or (allow_auto and name == "auto"):
        return name
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        expected = "a torch dtype name (e.g. 'float32', 'bfloat16')" + (" or 'auto'" if allow_auto else "")
        raise ValueError(f"{argument}={name!r} is not {expected}")
    return dtype
