"""How attention is computed: the kernel a transformers part runs, and the masks that keep sequences apart.

Kernel: recipes written for GPUs ask for ``flash_attention_2`` (Idefics2's training used it); the ``flash-attn``
package is optional (``pip install -e ".[gpu]"``) and needs CUDA. Rather than failing at load, a part falls back to
PyTorch's ``sdpa`` (same results, more memory for long packed sequences) and says so.

Segments: several sequences share one row when images are packed in a vision encoder (patch packing) or samples are
packed in the LM's rows (sequence packing). Attention stays inside each segment, through a block-diagonal mask
(``eager``, ``sdpa``, ``flex_attention``) or, under flash attention, the varlen lengths of the segments.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


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


def same_segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """``[n, 1, s, s]`` bool attention mask letting each token see only tokens of its own segment (bidirectional).

    ``segments`` is ``[n, s]``: bool "is real" (real tokens see real tokens, padding sees padding) or integer segment
    ids (a packed sequence: each image sees itself). Block-diagonal rather than key-padding only, so no query row is
    empty (no NaNs) and padding neither attends to nor is attended by real tokens.
    """
    return segments[:, None, :, None] == segments[:, None, None, :]


def block_diagonal_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask ``[b, 1, s, s]``: 0 where query and key share a segment and key <= query.

    Works with transformers' ``eager`` and ``sdpa`` attention (a 4-D mask is used as given).

    Args:
        segment_ids: ``[b, s]`` sample index of every token (padding: its own segment, e.g. ``-1``).
        dtype: The LM's compute dtype.
    """
    s = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [b, s, s]
    causal = torch.ones(s, s, dtype=torch.bool, device=segment_ids.device).tril()
    mask = torch.zeros(same.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill(~(same & causal), torch.finfo(dtype).min).unsqueeze(1)


def varlen_kwargs(lengths: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """Flash-attention varlen arguments (``cu_seq_lens_q/k``, ``max_length_q/k``) for segments of ``lengths`` ``[k]``.

    transformers' flash path calls the varlen kernel with these lengths instead of reading an attention mask.

    Returns:
        ``cu_seq_lens_q``/``cu_seq_lens_k`` (``[k + 1]`` int32 cumulative lengths) and ``max_length_q``/
        ``max_length_k`` (the longest segment, a Python int: one host read).
    """
    cu_seq_lens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)  # [k + 1]
    max_length = int(lengths.max())
    return {
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": max_length,
        "max_length_k": max_length,
    }


def flash_varlen_kwargs(segment_ids: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """:func:`varlen_kwargs` for packed rows ``[b, s]`` flattened to one sequence ``[1, b * s]``.

    Every run of equal ``segment_ids`` within a row is one sequence (padding, ``-1``, is its own), and every row
    starts a new one.

    Args:
        segment_ids: ``[b, s]`` sample index of every token.
    """
    b, s = segment_ids.shape
    starts = torch.ones(b, s, dtype=torch.bool, device=segment_ids.device)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]  # [b, s]; column 0: every row starts a sequence
    begin = starts.flatten().nonzero().flatten()  # [k]
    end = torch.cat([begin[1:], torch.tensor([b * s], device=segment_ids.device)])  # [k]
    return varlen_kwargs(end - begin)
