"""Fully autoregressive fusion: visual tokens replace ``<image>`` placeholders in the text.

Paper section 3.2 (Finding 2/3, Figure 2): the connector's output is concatenated
with the text embeddings and the whole sequence goes through the LM. Placeholders
are filled in reading order (row-major over the batch), image after image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlmkit.checks import check_equal
from vlmkit.interfaces import LanguageModel, LanguageModelOutput


class FullyAutoregressiveFusion(nn.Module):
    """Splice visual tokens into the embedding sequence at image placeholder positions.

    Each image contributes all its real visual tokens (``tokens_per_image = v``), so a
    text with ``k`` images holds ``sum_i v_i`` ``<image>`` placeholders. The fusion
    adds no parameters. Packed rows pass through unchanged (``supports_packing``): placeholders are filled in text
    order, so a packed sample gets exactly its own images.
    """

    supports_packing = True

    @property
    def block_class(self) -> type[nn.Module] | None:
        """No blocks: the fusion adds no parameters."""
        return None

    def bind(self, language_model: LanguageModel, visual_dim: int) -> None:
        """Check that visual tokens live in the LM's embedding space (nothing to build)."""
        if visual_dim != language_model.hidden_size:
            raise ValueError(
                f"fully autoregressive fusion needs visual tokens of the LM's width: connector out_dim={visual_dim}, "
                f"language model hidden_size={language_model.hidden_size}"
            )

    def tokens_per_image(self, num_visual_tokens: int) -> int:
        """One placeholder per visual token."""
        return num_visual_tokens

    def forward(
        self,
        language_model: LanguageModel,
        inputs_embeds: torch.Tensor,
        image_token_mask: torch.Tensor,
        visual_tokens: torch.Tensor | None,
        visual_mask: torch.Tensor | None = None,
        **lm_kwargs: Any,
    ) -> LanguageModelOutput:
        """Fill the placeholders and run the LM.

        Args:
            language_model: The LM to run.
            inputs_embeds: Text embeddings ``[b, s, d]``.
            image_token_mask: ``True`` at ``<image>`` placeholders ``[b, s]``.
            visual_tokens: Connector output ``[n, v, d]`` for the ``n`` images, in text order.
            visual_mask: Which visual tokens are real ``[n, v]`` (``None``: all).
            **lm_kwargs: ``attention_mask``, ``position_ids``, ``cache``, ``use_cache``; ``segment_ids`` (packing).

        Raises:
            ValueError: If the number of placeholders differs from the number of visual tokens (on CPU; a
                device-side assertion elsewhere, see :mod:`vlmkit.checks`).
        """
        num_visual: torch.Tensor | int = 0
        if visual_tokens is not None:
            num_visual = visual_tokens.shape[0] * visual_tokens.shape[1]
            visual_tokens = visual_tokens.flatten(0, 1)  # [n * v, d]
            if visual_mask is not None:  # real tokens first, in order (no boolean indexing: it reads the device)
                real = visual_mask.flatten()  # [n * v]
                visual_tokens = visual_tokens[torch.argsort((~real).to(torch.int8), stable=True)]  # [n * v, d]
                num_visual = real.sum()
        check_equal(
            image_token_mask.sum(),
            num_visual,
            lambda found, produced: (
                f"the text holds {found} image placeholder tokens but the images produced {produced} visual tokens"
            ),
        )
        if visual_tokens is not None:  # fills the placeholders with the first (real) visual tokens, in order
            mask = image_token_mask.unsqueeze(-1).expand_as(inputs_embeds)  # [b, s, d]
            inputs_embeds = inputs_embeds.masked_scatter(mask, visual_tokens.to(inputs_embeds.dtype))
        return language_model(inputs_embeds=inputs_embeds, **lm_kwargs)
