"""Sequence packing (NaViT, Dehghani et al. 2023) for the vision encoders: padding dropped before the transformer.

The kept tokens of a padded batch ``[n, s, d]`` become one sequence ``[1, S, d]`` in which each image is a contiguous
segment (its prefix tokens, then its real patches, row-major); the encoder keeps segments apart with a block-diagonal
mask or varlen lengths, and the result is scattered back to ``[n, s, d]`` with zeros where nothing was kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def packed_forward(
    tokens: torch.Tensor, keep: torch.Tensor, run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Run ``run`` over the kept tokens of all images as one sequence and scatter the result back.

    Args:
        tokens: ``[n, s, d]`` tokens of a padded batch.
        keep: ``[n, s]`` bool, True on the tokens to compute (prefix tokens and real patches).
        run: ``run(packed [1, S, d], lengths [n]) -> [1, S, d_out]``, ``S = lengths.sum()``; ``lengths`` are the
            segment lengths, one per image, in order.

    Returns:
        ``[n, s, d_out]``: ``run``'s output on kept tokens, zeros elsewhere.
    """
    lengths = keep.sum(1)  # [n]
    packed = tokens[keep][None]  # [1, S, d]
    out = run(packed, lengths) if packed.shape[1] else packed  # [1, S, d_out]
    unpacked = out.new_zeros(*keep.shape, out.shape[-1])  # [n, s, d_out]
    unpacked[keep] = out[0]
    return unpacked


def segment_ids(lengths: torch.Tensor) -> torch.Tensor:
    """``[1, S]`` index of the image each packed token belongs to (``lengths`` ``[n]``)."""
    return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)[None]


def varlen_kwargs(lengths: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """Flash-attention varlen arguments (``cu_seq_lens_q/k``, ``max_length_q/k``) for segments of ``lengths``."""
    cu_seq_lens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)  # [n + 1]
    max_length = int(lengths.max())
    return {
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": max_length,
        "max_length_k": max_length,
    }
