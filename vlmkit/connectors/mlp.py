"""Token-preserving MLP projection from vision features to the language model's space.

The gated form (``down(act(gate(x)) * up(x))``, no bias) is Idefics2's modality projection with
the same attribute names, so its weights load 1:1; ``gated=False`` gives LLaVA's Linear-act-Linear.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN


class MLPProjection(nn.Module):
    """Per-patch MLP projection ``in_dim -> out_dim``; one visual token per patch (``v = p``).

    Idefics2 (Laurençon et al. 2024, appendix A.1.3, Table 13) puts this gated MLP before the perceiver
    resampler; it equals transformers' ``Idefics2MLP``. With ``gated=False`` it is the two-layer
    ``fc1 -> act -> fc2`` projection of LLaVA-1.5 (Liu et al. 2023).

    Args:
        in_dim: Feature dimension of the vision encoder output.
        out_dim: Hidden size of the language model.
        hidden_dim: Intermediate size; defaults to ``4 * out_dim``.
        activation: Name of the activation in ``transformers.activations.ACT2FN`` (e.g. ``"silu"``,
            ``"gelu"``).
        gated: Gated (SwiGLU-style, no bias, Idefics2) if True, else Linear-act-Linear with bias (LLaVA).

    Raises:
        ValueError: If a dimension is not positive or ``activation`` is unknown.

    Example:
        >>> proj = MLPProjection(48, 64)
        >>> proj(torch.randn(2, 9, 48)).shape
        torch.Size([2, 9, 64])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        activation: str = "silu",
        gated: bool = True,
    ) -> None:
        super().__init__()
        hidden_dim = 4 * out_dim if hidden_dim is None else hidden_dim
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if activation not in ACT2FN:
            raise ValueError(f"activation={activation!r} is not a name in transformers' ACT2FN")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.hidden_dim = hidden_dim
        self.gated = gated
        self.act_fn = ACT2FN[activation]
        if gated:
            self.gate_proj = nn.Linear(in_dim, hidden_dim, bias=False)
            self.up_proj = nn.Linear(in_dim, hidden_dim, bias=False)
            self.down_proj = nn.Linear(hidden_dim, out_dim, bias=False)
        else:
            self.fc1 = nn.Linear(in_dim, hidden_dim)
            self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Project every patch independently.

        Args:
            features: Patch features ``[n, p, in_dim]``.
            mask: ``[n, p]`` bool, True on real patches. Unused: patches never interact, so padding
                cannot affect real tokens; use :meth:`output_mask` to know which outputs are real.

        Returns:
            Visual tokens ``[n, p, out_dim]``.
        """
        if self.gated:
            return self.down_proj(self.act_fn(self.gate_proj(features)) * self.up_proj(features))  # [n, p, out_dim]
        return self.fc2(self.act_fn(self.fc1(features)))  # [n, p, out_dim]

    @property
    def block_class(self) -> type[nn.Module] | None:
        """No repeated block (the whole connector is one small unit)."""
        return None

    def num_visual_tokens(self, num_patches: int) -> int:
        """One visual token per patch."""
        return num_patches

    def output_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Token-preserving: the output tokens are real exactly where the patches are (``[n, p]``)."""
        return mask
