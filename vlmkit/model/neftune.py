"""NEFTune (Jain et al. 2023): uniform noise on the text embeddings in training, Idefics2's instruction tuning.

Paper section 4.2. The noise scale ``alpha / sqrt(L * d)`` depends on the real length ``L`` of each sample, so in
packed rows every sample gets the scale of its own length; evaluation is never noised.
"""

from __future__ import annotations

import torch


def neftune(embeds: torch.Tensor, lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """NEFTune: ``embeds + U(-1, 1) * alpha / sqrt(L * d)`` ``[b, s, d]``.

    Args:
        embeds: Token embeddings ``[b, s, d]``.
        lengths: ``L``, the real length of the sample each token belongs to, ``[b, s]``.
        alpha: Noise scale.
    """
    scale = alpha / torch.sqrt(lengths.clamp(min=1).to(embeds.dtype) * embeds.shape[-1])  # [b, s]
    noise = torch.empty_like(embeds).uniform_(-1, 1)  # [b, s, d]
    return embeds + noise * scale[..., None]


def sample_lengths(attention_mask: torch.Tensor | None, segment_ids: torch.Tensor | None) -> torch.Tensor:
    """Real length of the sample each token belongs to ``[b, s]`` (packed rows: of its segment).

    Raises:
        ValueError: Without ``attention_mask`` and ``segment_ids`` (the lengths are unknown).
    """
    if segment_ids is not None:
        same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [b, s, s]
        return same.sum(-1)
    if attention_mask is None:
        raise ValueError("NEFTune needs the attention_mask (or segment_ids) to know each sample's length")
    return attention_mask.sum(-1, keepdim=True).expand_as(attention_mask)
