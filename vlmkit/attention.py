"""Which attention kernel a transformers part runs: the one asked for, or sdpa when flash-attn cannot run.

Recipes written for GPUs ask for ``flash_attention_2`` (Idefics2's training used it); the ``flash-attn`` package is
optional (``pip install -e ".[gpu]"``) and needs CUDA. Rather than failing at load, a part falls back to PyTorch's
``sdpa`` (same results, more memory for long packed sequences) and says so.
"""

from __future__ import annotations

import warnings


def attention_implementation(requested: str | None, argument: str = "attn_implementation") -> str | None:
    """``requested``, or ``"sdpa"`` (with a warning naming ``argument``) for flash-attention 2 that cannot run here."""
    if requested != "flash_attention_2":
        return requested
    from transformers.utils import is_flash_attn_2_available

    if is_flash_attn_2_available():
        return requested
    warnings.warn(
        f"{argument}='flash_attention_2' needs the flash-attn package and a CUDA GPU (pip install -e \".[gpu]\"), "
        "which this process lacks: using 'sdpa' instead",
        stacklevel=2,
    )
    return "sdpa"
