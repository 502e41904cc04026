"""MAPL mapping network: a small transformer encoder that pools patches into learned-query outputs.

Patches are projected down to ``hidden_dim``, learned constant embeddings are appended, a pre-norm
``nn.TransformerEncoder`` (padding patches key-masked) mixes them, and only the learned positions are read out.
"""

from __future__ import annotations

import torch
from torch import nn


class MappingNetwork(nn.Module):
    """Mapping network of MAPL (Mañas et al. 2023), a learned-query transformer pooling.

    "MAPL: Parameter-Efficient Adaptation of Unimodal Pre-Trained Models for Vision-Language Few-Shot
    Prompting". Compared as a pooling connector in Idefics2 (Laurençon et al. 2024, appendix A.1.3, Table 11).
    ``in_dim -> hidden_dim`` linear, ``num_tokens`` learned constant embeddings appended to the patch
    sequence, ``depth`` pre-norm transformer encoder layers (no positional embeddings: the vision
    features already carry position), final LayerNorm, and a ``hidden_dim -> out_dim`` linear on the
    outputs at the learned positions.

    Args:
        in_dim: Feature dimension of the vision encoder output.
        out_dim: Hidden size of the language model.
        num_tokens: Number of learned constant embeddings = visual tokens per image (MAPL: 32).
        hidden_dim: Width of the transformer encoder (MAPL: 256).
        depth: Number of encoder layers (MAPL: 4).
        num_heads: Attention heads per layer (MAPL: 8); must divide ``hidden_dim``.
        dropout: Dropout inside the encoder layers.

    Raises:
        ValueError: If a dimension is not positive, ``num_heads`` does not divide ``hidden_dim`` or
            ``dropout`` is outside ``[0, 1)``.

    Example:
        >>> net = MappingNetwork(48, 64, num_tokens=4, hidden_dim=32, depth=1, num_heads=4)
        >>> net(torch.randn(2, 9, 48)).shape
        torch.Size([2, 4, 64])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tokens: int = 32,
        hidden_dim: int = 256,
        depth: int = 4,
        num_heads: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("out_dim", out_dim),
            ("num_tokens", num_tokens),
            ("hidden_dim", hidden_dim),
            ("depth", depth),
            ("num_heads", num_heads),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if hidden_dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide hidden_dim={hidden_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_tokens = num_tokens
        self.input_proj = nn.Linear(in_dim, hidden_dim)
        self.embeddings = nn.Parameter(torch.randn(num_tokens, hidden_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            hidden_dim,
            num_heads,
            dim_feedforward=4 * hidden_dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(hidden_dim), enable_nested_tensor=False)
        self.output_proj = nn.Linear(hidden_dim, out_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool patches into ``num_tokens`` visual tokens.

        Args:
            features: Patch features ``[n, p, in_dim]``.
            mask: ``[n, p]`` bool, True on real patches; padding patches are zeroed and key-masked.

        Returns:
            Visual tokens ``[n, num_tokens, out_dim]``.
        """
        n, p, _ = features.shape
        padding = None
        if mask is not None:
            real = mask.to(torch.bool)  # [n, p]
            features = features.masked_fill(~real.unsqueeze(-1), 0.0)  # [n, p, in_dim]
            padding = torch.cat([~real, real.new_zeros(n, self.num_tokens)], dim=1)  # [n, p + t], True = ignore
        hidden = self.input_proj(features)  # [n, p, h]
        queries = self.embeddings.unsqueeze(0).expand(n, -1, -1)  # [n, t, h]
        hidden = torch.cat([hidden, queries], dim=1)  # [n, p + t, h]
        hidden = self.encoder(hidden, src_key_padding_mask=padding)  # [n, p + t, h]
        return self.output_proj(hidden[:, p:])  # [n, t, out_dim]

    @property
    def block_class(self) -> type[nn.Module] | None:
        """No repeated block (the whole connector is one small unit)."""
        return None

    def num_visual_tokens(self, num_patches: int) -> int:
        """Return ``num_tokens``, whatever the number of patches."""
        return self.num_tokens

    def output_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Pooling connector: all ``num_tokens`` outputs are real, so ``None``."""
        return None
