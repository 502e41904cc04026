"""Patch packing (NaViT, Dehghani et al. 2023) in the vision encoders: padding dropped before the transformer.

The kept tokens of a padded batch ``[n, s, d]`` become one sequence ``[1, S, d]`` in which each image is a contiguous
segment (its prefix tokens, then its real patches, row-major); the encoder keeps segments apart with a block-diagonal
mask or varlen lengths, and the result is scattered back to ``[n, s, d]`` with zeros where nothing was kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


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
