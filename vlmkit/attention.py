"""How attention is computed: the kernel a transformers part runs, and the masks that keep sequences apart.

Kernel: recipes written for GPUs ask for ``flash_attention_2`` (Idefics2's training used it); the ``flash-attn``
package is optional (``pip install -e ".[gpu]"``) and needs CUDA. Rather than failing at load, a part falls back to
PyTorch's ``sdpa`` (same results, more memory for long packed sequences) and says so.

Segments: several sequences share one row when images are packed in a vision encoder (patch packing) or samples are
packed in the LM's rows (sequence packing). Attention stays inside each segment, through a block-diagonal mask
(``eager``, ``sdpa``, ``flex_attention``) or, under flash attention, the varlen lengths of the segments.

Cost: a dense block-diagonal mask keeps samples apart but still computes every query against every key of the row
(``S^2``). vlmkit's ``sdpa`` (:data:`SEGMENT_SDPA`, what ``attn_implementation="sdpa"`` selects) attends segment by
segment when the mask says where the segments are (:func:`with_segments`), at ``sum(L_i^2)``: one SDPA call per
segment, on CPU and GPU, no compilation. A mask without segments runs as transformers' ``sdpa`` does, so results
never depend on the path. (``flex_attention`` with a block mask would be the other block-sparse kernel, but it has
no backward on CPU in torch 2.14; on GPU, ``flash_attention_2`` runs packed rows as varlen sequences.)
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SEGMENT_SDPA = "vlmkit_sdpa"
"""The attention implementation ``attn_implementation="sdpa"`` selects: transformers' ``sdpa``, plus per-segment
attention for masks that carry their segments (:func:`with_segments`). Registered with transformers on first use."""


def attention_implementation(requested: str | None, argument: str = "attn_implementation") -> str | None:
    """The implementation to build a transformers part with: ``requested``, with two substitutions.

    Flash-attention 2 that cannot run here becomes ``"sdpa"``, with a warning naming ``argument``. Once built, a model
    running ``"sdpa"`` switches to :data:`SEGMENT_SDPA` through :func:`use_segment_sdpa`.
    """
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


def use_segment_sdpa(model: nn.Module) -> None:
    """Switch a transformers ``model`` (and its sub-models) from ``sdpa`` to :data:`SEGMENT_SDPA`, where it can.

    Only families that dispatch through transformers' ``AttentionInterface`` (``_supports_attention_backend``:
    Llama, Mistral, Qwen2, SigLIP, Idefics2's tower, ...) switch; the others keep their own ``sdpa`` classes. The
    results are the same; packed rows then cost attention within each segment only.
    """
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not getattr(
        model, "_supports_attention_backend", False
    ):
        return
    model.set_attn_implementation(register_segment_sdpa())


def register_segment_sdpa() -> str:
    """Register :func:`segment_sdpa_attention` (and transformers' sdpa mask) as :data:`SEGMENT_SDPA`; returns the name.

    Idempotent; done when a part is built rather than at import (no side effects at import).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if SEGMENT_SDPA not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(SEGMENT_SDPA, segment_sdpa_attention)
        AttentionMaskInterface.register(SEGMENT_SDPA, sdpa_mask)
    return SEGMENT_SDPA


def with_segments(mask: torch.Tensor, lengths: list[list[int]]) -> torch.Tensor:
    """Mark a block-diagonal 4-D ``mask`` ``[b, 1, s, s]`` with the segment lengths of each row; returns ``mask``.

    :func:`segment_sdpa_attention` then attends segment by segment (causally when the layer is causal) instead of
    over the whole row with the mask; any other kernel reads the mask, which must be exactly the block-diagonal
    (causal) mask of these segments: both give the same result.

    Args:
        mask: The exact 4-D mask, bool or additive.
        lengths: Per row, the lengths of its consecutive segments (summing to ``s``).
    """
    mask.segment_lengths = lengths
    return mask


def segment_sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Transformers' ``sdpa``, run per segment when ``attention_mask`` carries them (:func:`with_segments`).

    Args:
        module: The attention layer (its ``is_causal`` and ``num_key_value_groups`` are read).
        query: ``[b, h, s, d]``.
        key: ``[b, h_kv, s, d]``.
        value: ``[b, h_kv, s, d]``.
        attention_mask: 4-D mask, or None.
        dropout: Attention dropout.
        scaling: Softmax scale.
        is_causal: The layer's causality (default ``module.is_causal``).
        **kwargs: Passed to transformers' ``sdpa_attention_forward``.

    Returns:
        ``[b, s, h, d]`` and no attention weights, as transformers' attention functions.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    lengths = getattr(attention_mask, "segment_lengths", None)
    if lengths is None or query.shape[2] != key.shape[2]:  # no segments, or decoding against a cache
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    rows = []
    for row, row_lengths in enumerate(lengths):
        start, pieces = 0, []
        for length in row_lengths:
            end = start + length
            q, k, v = (t[row : row + 1, :, start:end] for t in (query, key, value))  # [1, h(_kv), L, d]
            out, _ = sdpa_attention_forward(module, q, k, v, None, dropout, scaling, causal and length > 1, **kwargs)
            pieces.append(out)  # [1, L, h, d]
            start = end
        rows.append(torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0])
    return (torch.cat(rows) if len(rows) > 1 else rows[0]), None  # [b, s, h, d]


def segment_lengths(segment_ids: torch.Tensor) -> list[list[int]]:
    """Per row of ``segment_ids`` ``[b, s]``, the lengths of its runs of equal ids (one host read)."""
    b, s = segment_ids.shape
    starts = torch.ones(b, s, dtype=torch.bool, device=segment_ids.device)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]  # [b, s]
    lengths = []
    for row in starts.cpu():
        begin = row.nonzero().flatten().tolist() + [s]
        lengths.append([end - start for start, end in zip(begin[:-1], begin[1:])])
    return lengths


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
