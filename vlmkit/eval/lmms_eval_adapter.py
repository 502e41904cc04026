"""Deprecated: the lmms-eval adapter is :mod:`vlmkit.interop.lmms_eval` (it loads training checkpoints)."""

from vlmkit.deprecation import warn_deprecated
from vlmkit.interop.lmms_eval import VlmkitLMMSAdapter, lmms_eval_model

__all__ = ["VlmkitLMMSAdapter", "lmms_eval_model"]

warn_deprecated("vlmkit.eval.lmms_eval_adapter is now vlmkit.interop.lmms_eval", stacklevel=2)
