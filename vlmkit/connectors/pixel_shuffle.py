"""Pixel-shuffle connector: space-to-depth over each image's patch grid, then a projection.

The perceiver's successor in Idefics3 and SmolVLM (and nanoVLM): every ``r x r`` block of neighbouring patches
becomes one visual token of ``r^2`` times the width, so an image costs ``r^2`` times fewer tokens and nothing is
learned but the projection. The token count depends on the grid's shape, not only its size, so this connector
takes the padded 2-D patch grid (:class:`~vlmkit.interfaces.GridConnector`) instead of the packed patch sequence.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from vlmkit.connectors.mlp import MLPProjection


class PixelShuffleConnector(nn.Module):
    """Space-to-depth by ``scale_factor`` over the patch grid, then a linear or MLP projection.

    Idefics3 (Laurençon et al. 2024, "Building and better understanding vision-language models") and SmolVLM
    (Marafioti et al. 2025) replace Idefics2's perceiver by this "pixel shuffle": the ``[rows, cols, d]`` grid of
    one image becomes ``[rows/r, cols/r, d * r^2]`` (each token concatenates its ``r x r`` block, row offset major,
    column offset minor), then a bias-free linear layer maps it to the LM's width. With ``projection="linear"`` this
    is numerically identical to transformers' ``Idefics3Connector`` on square grids.

    Images of any aspect ratio: each image's real patches (a top-left ``rows_i x cols_i`` rectangle of the padded
    grid, from ``mask``) are kept and everything else is zeroed; a grid not divisible by ``r`` is completed with zero
    patches up to the next multiple (the last token row/column then holds fewer real patches), so an image has
    ``ceil(rows_i / r) * ceil(cols_i / r)`` tokens and gives the same tokens alone or padded in a batch.
    (transformers' connector assumes square grids divisible by ``r``: Idefics3/SmolVLM only feed square tiles.)

    Args:
        in_dim: Feature dimension of the vision encoder output.
        out_dim: Hidden size of the language model.
        scale_factor: ``r``, the side of the patch block merged into one token (Idefics3-8B: 2; SmolVLM-256M and
            -500M: 4; SmolVLM-2.2B: 3).
        projection: ``"linear"`` (Idefics3/SmolVLM: one bias-free ``nn.Linear``) or ``"mlp"`` (LLaVA-style
            ``fc1 -> act -> fc2`` on the shuffled features, see :class:`~vlmkit.connectors.MLPProjection`).
        hidden_dim: Hidden size of the ``"mlp"`` projection (default ``4 * out_dim``).
        activation: Activation of the ``"mlp"`` projection (a name in transformers' ``ACT2FN``).

    Raises:
        ValueError: If a dimension or ``scale_factor`` is not positive, or ``projection`` is unknown.

    Example:
        >>> connector = PixelShuffleConnector(48, 64, scale_factor=2)
        >>> connector(torch.randn(2, 36, 48)).shape  # 6 x 6 patches -> 3 x 3 tokens
        torch.Size([2, 9, 64])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        scale_factor: int = 2,
        projection: Literal["linear", "mlp"] = "linear",
        hidden_dim: int | None = None,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("scale_factor", scale_factor)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if projection not in ("linear", "mlp"):
            raise ValueError(f"projection must be 'linear' or 'mlp', got {projection!r}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.scale_factor = scale_factor
        shuffled = in_dim * scale_factor**2
        if projection == "linear":
            self.projection: nn.Module = nn.Linear(shuffled, out_dim, bias=False)
        else:
            self.projection = MLPProjection(shuffled, out_dim, hidden_dim, activation=activation, gated=False)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Shuffle each ``r x r`` block of patches into one token and project it.

        Args:
            features: Patch features ``[n, rows * cols, in_dim]`` of the padded grid, row-major.
            mask: ``[n, rows, cols]`` bool, True on each image's real patches (a top-left rectangle); ``None``: a
                square grid of real patches (``rows = cols = sqrt(p)``, Idefics3's case).

        Returns:
            Visual tokens ``[n, ceil(rows / r) * ceil(cols / r), out_dim]``, row-major over the token grid;
            :meth:`output_mask` says which are real.

        Raises:
            ValueError: If ``mask`` does not describe ``features``' grid, or without ``mask`` the patches do not
                form a square grid.
        """
        n, num_patches, dim = features.shape
        rows, cols = self._grid(num_patches, mask)
        grid = features.reshape(n, rows, cols, dim)  # [n, rows, cols, d]
        if mask is not None:
            grid = grid.masked_fill(~mask.to(torch.bool).unsqueeze(-1), 0.0)  # padding patches never reach a token
        r = self.scale_factor
        pad_rows, pad_cols = -rows % r, -cols % r
        if pad_rows or pad_cols:  # zero patches complete the last block row/column
            grid = F.pad(grid, (0, 0, 0, pad_cols, 0, pad_rows))  # [n, R*r, C*r, d]
        token_rows, token_cols = (rows + pad_rows) // r, (cols + pad_cols) // r
        blocks = grid.reshape(n, token_rows, r, token_cols, r, dim)  # [n, R, r, C, r, d]
        tokens = blocks.permute(0, 1, 3, 2, 4, 5).reshape(n, token_rows * token_cols, r * r * dim)  # [n, R*C, r²d]
        return self.projection(tokens)  # [n, R*C, out_dim]

    @property
    def block_class(self) -> type[nn.Module] | None:
        """No repeated block (one projection after the shuffle)."""
        return None

    def num_grid_tokens(self, rows: int, cols: int) -> int:
        """Visual tokens of one image whose real patches form a ``rows x cols`` grid."""
        r = self.scale_factor
        return math.ceil(rows / r) * math.ceil(cols / r)

    def num_visual_tokens(self, num_patches: int) -> int:
        """Visual tokens of a square grid of ``num_patches`` patches (other grids: :meth:`num_grid_tokens`).

        Raises:
            ValueError: If ``num_patches`` is not a square: the count then depends on the grid's shape.
        """
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise ValueError(
                f"PixelShuffleConnector: {num_patches} patches form no square grid; the token count depends on the "
                "grid's rows and columns (num_grid_tokens)"
            )
        return self.num_grid_tokens(side, side)

    def output_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """``[n, R * C]`` bool, True on each image's real tokens (``None`` without a patch mask: all real).

        Token ``(a, b)`` of image ``i`` is real when its block holds a real patch: ``a < ceil(rows_i / r)`` and
        ``b < ceil(cols_i / r)``.
        """
        if mask is None:
            return None
        mask = mask.to(torch.bool)
        r = self.scale_factor
        real_rows = mask.any(2).sum(1)  # [n]
        real_cols = mask.any(1).sum(1)  # [n]
        token_rows, token_cols = -(-mask.shape[1] // r), -(-mask.shape[2] // r)
        in_rows = torch.arange(token_rows, device=mask.device)[None, :] < (real_rows[:, None] + r - 1) // r  # [n, R]
        in_cols = torch.arange(token_cols, device=mask.device)[None, :] < (real_cols[:, None] + r - 1) // r  # [n, C]
        return (in_rows[:, :, None] & in_cols[:, None, :]).flatten(1)  # [n, R*C]

    def _grid(self, num_patches: int, mask: torch.Tensor | None) -> tuple[int, int]:
        """``(rows, cols)`` of the padded patch grid."""
        if mask is None:
            side = math.isqrt(num_patches)
            if side * side != num_patches:
                raise ValueError(
                    f"PixelShuffleConnector got {num_patches} patches, no square grid: pass the patch mask "
                    "[n, rows, cols] of the grid"
                )
            return side, side
        if mask.ndim != 3 or mask.shape[1] * mask.shape[2] != num_patches:
            raise ValueError(
                f"PixelShuffleConnector needs the patch mask of the grid, [n, rows, cols] with rows * cols = "
                f"{num_patches} patches; got shape {tuple(mask.shape)}"
            )
        return mask.shape[1], mask.shape[2]
