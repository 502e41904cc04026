"""Linear pooling connector: the flattened patch sequence linearly mapped to a shorter token sequence.

A dense ``p * in_dim -> v * out_dim`` matrix is impractically large (729 * 1152 x 64 * 4096), so the
weight is Kronecker-factorised: one linear over the sequence axis and one over features, plus a full bias.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearProjection(nn.Module):
    """Rank-structured linear layer on the flattened sequence of vision hidden states.

    The "simple linear layer that takes the flattened sequence of vision hidden states and projects it
    into a shorter sequence of visual tokens" of Idefics2 (Laurençon et al. 2024, appendix A.1.3,
    Table 11). With ``X`` the ``[num_patches, in_dim]`` features of one image,
    ``Y = S @ X @ F.T + B``, i.e. on the row-major flattened sequence
    ``vec(Y) = (S ⊗ F) vec(X) + vec(B)``: a dense linear whose weight is the Kronecker product of the
    sequence map ``S [num_tokens, num_patches]`` and the feature map ``F [out_dim, in_dim]``.

    Images with fewer than ``num_patches`` patches are zero-padded up to it and padding patches
    (``mask`` False) are zeroed, so an image gives the same tokens alone or padded in a batch. The
    sequence map is position-specific: it assumes images share one patch layout (e.g. a fixed
    resolution), as in the paper's ablation.

    Args:
        in_dim: Feature dimension of the vision encoder output.
        out_dim: Hidden size of the language model.
        num_patches: Maximum (padded) number of patches per image; 729 for SigLIP-SO400M at 384px.
        num_tokens: Number of visual tokens per image (Table 3: 64).

    Raises:
        ValueError: If a dimension is not positive.

    Example:
        >>> proj = LinearProjection(48, 64, num_patches=16, num_tokens=4)
        >>> proj(torch.randn(2, 16, 48)).shape
        torch.Size([2, 4, 64])
    """

    def __init__(self, in_dim: int, out_dim: int, num_patches: int = 729, num_tokens: int = 64) -> None:
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("out_dim", out_dim),
            ("num_patches", num_patches),
            ("num_tokens", num_tokens),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_patches = num_patches
        self.num_tokens = num_tokens
        self.sequence_proj = nn.Linear(num_patches, num_tokens, bias=False)
        self.feature_proj = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(num_tokens, out_dim))

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool ``p <= num_patches`` patches into ``num_tokens`` visual tokens.

        Args:
            features: Patch features ``[n, p, in_dim]``.
            mask: ``[n, p]`` bool, True on real patches; padding patches are zeroed.

        Returns:
            Visual tokens ``[n, num_tokens, out_dim]``.

        Raises:
            ValueError: If ``p > num_patches`` (never truncated silently).
        """
        n, p, _ = features.shape
        self.num_visual_tokens(p)  # validates p
        if mask is not None:
            features = features.masked_fill(~mask.to(torch.bool).unsqueeze(-1), 0.0)  # [n, p, in_dim]
        if p < self.num_patches:
            features = nn.functional.pad(features, (0, 0, 0, self.num_patches - p))  # [n, P, in_dim]
        tokens = self.sequence_proj(features.transpose(1, 2))  # [n, in_dim, v]
        tokens = self.feature_proj(tokens.transpose(1, 2))  # [n, v, out_dim]
        return tokens + self.bias  # [n, v, out_dim]

    @property
    def block_class(self) -> type[nn.Module] | None:
        """No repeated block (the whole connector is one small unit)."""
        return None

    def num_visual_tokens(self, num_patches: int) -> int:
        """Return ``num_tokens`` for any image that fits.

        Raises:
            ValueError: If ``num_patches`` exceeds the configured ``num_patches``.
        """
        if num_patches > self.num_patches:
            raise ValueError(
                f"LinearProjection got {num_patches} patches but was built for at most num_patches="
                f"{self.num_patches}; raise num_patches or reduce the image resolution"
            )
        return self.num_tokens

    def output_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Pooling connector: all ``num_tokens`` outputs are real, so ``None``."""
        return None
