"""A CPU stand-in for ``torch.cuda.set_sync_debug_mode``: record where vlmkit code reads tensor values on the host.

On a GPU each of these waits for the device (``int(t)``, ``bool(t)``, ``t.item()``, ``t.tolist()``, ``torch.equal``,
``nonzero``, boolean-mask indexing, ``repeat_interleave`` by a tensor without ``output_size``). Calls made from
other libraries' code (transformers, torch) are not recorded: only the frame that called torch is looked at.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

import vlmkit

PACKAGE = str(Path(vlmkit.__file__).parent)
READS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "equal", "nonzero", "unique"}
READS |= {"masked_select", "bincount", "histc"}


def _reads_device(name: str, args: tuple, kwargs: dict) -> bool:
    if name in READS:
        return True
    if name in ("__getitem__", "__setitem__", "index_put", "index_put_") and len(args) > 1:
        index = args[1] if isinstance(args[1], (tuple, list)) else (args[1],)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
    if name == "repeat_interleave" and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return "output_size" not in kwargs
    return False


class HostReads(TorchFunctionMode):
    """Context manager; ``calls`` lists ``"<op> at <file>:<line>"`` for every host read made by vlmkit code."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if _reads_device(name, args, kwargs):
            caller = next(f for f in reversed(traceback.extract_stack()[:-1]) if "/torch/" not in f.filename)
            if caller.filename.startswith(PACKAGE):
                where = Path(caller.filename).relative_to(Path(PACKAGE).parent)
                self.calls.append(f"{name} at {where}:{caller.lineno}")
        return func(*args, **kwargs)
