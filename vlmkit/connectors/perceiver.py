"""Idefics2's connector: optional gated-MLP modality projection, then a perceiver resampler.

Latents attend to concat(context, latents) with grouped-query attention and RMSNorm pre-norms; names
match transformers' ``Idefics2Connector`` so its state dict loads after dropping ``perceiver_resampler.``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from vlmkit.connectors.mlp import MLPProjection


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, weight applied in the input dtype (as Idefics2/Llama)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension of ``x [..., dim]``."""
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class PerceiverAttention(nn.Module):
    """Grouped-query attention of latents over concat(context, latents).

    When the context width differs from the latent width (``projection=False``), the latents get their
    own key/value maps (``k_latents_proj``, ``v_latents_proj``); otherwise one ``k_proj``/``v_proj`` serves
    both, exactly as Idefics2.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int, head_dim: int, num_key_value_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.num_key_value_heads = num_key_value_heads
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(context_dim, num_key_value_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(context_dim, num_key_value_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, dim, bias=False)
        self.k_latents_proj = self.v_latents_proj = None
        if context_dim != dim:
            self.k_latents_proj = nn.Linear(dim, num_key_value_heads * head_dim, bias=False)
            self.v_latents_proj = nn.Linear(dim, num_key_value_heads * head_dim, bias=False)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Attend ``latents [n, l, dim]`` to ``context [n, p, context_dim]`` and themselves.

        ``attn_mask`` is bool ``[n, 1, 1, p + l]`` (True = attend) or None. Returns ``[n, l, dim]``.
        """
        n, num_latents, _ = latents.shape
        if self.k_latents_proj is None:
            both = torch.cat([context, latents], dim=1)  # [n, p + l, d]
            keys, values = self.k_proj(both), self.v_proj(both)  # [n, p + l, kv * hd]
        else:
            keys = torch.cat([self.k_proj(context), self.k_latents_proj(latents)], dim=1)  # [n, p + l, kv * hd]
            values = torch.cat([self.v_proj(context), self.v_latents_proj(latents)], dim=1)  # [n, p + l, kv * hd]
        queries = self.q_proj(latents).view(n, num_latents, self.num_heads, self.head_dim)  # [n, l, h, hd]
        queries = queries.transpose(1, 2)  # [n, h, l, hd]
        keys = keys.view(n, -1, self.num_key_value_heads, self.head_dim).transpose(1, 2)  # [n, kv, p + l, hd]
        values = values.view(n, -1, self.num_key_value_heads, self.head_dim).transpose(1, 2)  # [n, kv, p + l, hd]
        if attn_mask is not None and self.num_heads != self.num_key_value_heads:
            # SDPA's memory-efficient kernel takes a mask but no GQA (it would fall back to the math kernel): one
            # key/value head per query head instead, the same numbers
            groups = self.num_heads // self.num_key_value_heads
            keys = keys.repeat_interleave(groups, dim=1)  # [n, h, p + l, hd]
            values = values.repeat_interleave(groups, dim=1)  # [n, h, p + l, hd]
            out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask)  # [n, h, l, hd]
        else:
            out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(n, num_latents, -1))  # [n, l, d]


class PerceiverLayer(nn.Module):
    """Pre-norm block: ``x += attn(norm(x), norm(context)); x += mlp(norm(x))``."""

    def __init__(
        self,
        dim: int,
        context_dim: int,
        num_heads: int,
        head_dim: int,
        num_key_value_heads: int,
        mlp_ratio: int,
        rms_norm_eps: float,
        activation: str,
    ) -> None:
        super().__init__()
        self.input_latents_norm = RMSNorm(dim, rms_norm_eps)
        self.input_context_norm = RMSNorm(context_dim, rms_norm_eps)
        self.self_attn = PerceiverAttention(dim, context_dim, num_heads, head_dim, num_key_value_heads)
        self.post_attention_layernorm = RMSNorm(dim, rms_norm_eps)
        self.mlp = MLPProjection(dim, dim, hidden_dim=mlp_ratio * dim, activation=activation, gated=True)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Update ``latents [n, l, dim]`` from ``context [n, p, context_dim]``; returns ``[n, l, dim]``."""
        attended = self.self_attn(self.input_latents_norm(latents), self.input_context_norm(context), attn_mask)
        latents = latents + attended  # [n, l, d]
        return latents + self.mlp(self.post_attention_layernorm(latents))  # [n, l, d]


class PerceiverResampler(nn.Module):
    """Perceiver resampler (Jaegle et al. 2021; Alayrac et al. 2022) as built in Idefics2.

    Idefics2 (Laurençon et al. 2024, section 3, appendix A.1.3) pools each image's patches into
    ``num_latents`` tokens (Table 3: 64) with ``depth`` layers (Table 12: 3), after a gated-MLP modality
    projection (Table 13). With ``projection=True`` this is numerically identical to transformers'
    ``Idefics2Connector``; load its weights with :func:`idefics2_connector_state_dict`.

    Args:
        in_dim: Feature dimension of the vision encoder output.
        out_dim: Hidden size of the language model (= latent width).
        num_latents: Number of learned latents = visual tokens per image.
        depth: Number of perceiver layers.
        num_heads: Query heads.
        head_dim: Width of each head.
        num_key_value_heads: Key/value heads (grouped-query attention); must divide ``num_heads``.
        mlp_ratio: Hidden size of each layer's gated MLP as a multiple of ``out_dim``.
        projection: Put an ``MLPProjection`` (``in_dim -> out_dim``) before the resampler. Without it
            the context keeps ``in_dim`` (context norm and k/v maps take ``in_dim``).
        projection_hidden_dim: Hidden size of that projection; defaults to ``4 * out_dim`` (Idefics2-8B
            uses Mistral's intermediate size, 14336).
        rms_norm_eps: Epsilon of every RMSNorm.
        activation: Activation name (``ACT2FN``) of the projection and of the layer MLPs.

    Raises:
        ValueError: If a dimension is not positive or ``num_key_value_heads`` does not divide
            ``num_heads``.

    Example:
        >>> resampler = PerceiverResampler(48, 64, num_latents=8, depth=1, num_heads=4, head_dim=16,
        ...                                num_key_value_heads=2)
        >>> resampler(torch.randn(2, 30, 48), torch.ones(2, 30, dtype=torch.bool)).shape
        torch.Size([2, 8, 64])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_latents: int = 64,
        depth: int = 3,
        num_heads: int = 16,
        head_dim: int = 96,
        num_key_value_heads: int = 4,
        mlp_ratio: int = 4,
        projection: bool = True,
        projection_hidden_dim: int | None = None,
        rms_norm_eps: float = 1e-6,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("out_dim", out_dim),
            ("num_latents", num_latents),
            ("depth", depth),
            ("num_heads", num_heads),
            ("head_dim", head_dim),
            ("num_key_value_heads", num_key_value_heads),
            ("mlp_ratio", mlp_ratio),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if num_heads % num_key_value_heads != 0:
            raise ValueError(f"num_key_value_heads={num_key_value_heads} must divide num_heads={num_heads}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_latents = num_latents
        self.modality_projection = (
            MLPProjection(in_dim, out_dim, hidden_dim=projection_hidden_dim, activation=activation, gated=True)
            if projection
            else None
        )
        context_dim = out_dim if projection else in_dim
        # Idefics2 initialises latents to ones; a normal draw breaks the symmetry between latents.
        self.latents = nn.Parameter(torch.randn(num_latents, out_dim))
        self.layers = nn.ModuleList(
            PerceiverLayer(
                out_dim, context_dim, num_heads, head_dim, num_key_value_heads, mlp_ratio, rms_norm_eps, activation
            )
            for _ in range(depth)
        )
        self.norm = RMSNorm(out_dim, rms_norm_eps)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Resample each image's patches into ``num_latents`` tokens.

        Args:
            features: Patch features ``[n, p, in_dim]``.
            mask: ``[n, p]`` bool, True on real patches; padding patches are zeroed and never attended.

        Returns:
            Visual tokens ``[n, num_latents, out_dim]``.
        """
        n = features.shape[0]
        attn_mask = None
        if mask is not None:
            real = mask.to(torch.bool)  # [n, p]
            features = features.masked_fill(~real.unsqueeze(-1), 0.0)  # [n, p, in_dim]
            keep = torch.cat([real, real.new_ones(n, self.num_latents)], dim=1)  # [n, p + l], latents always kept
            attn_mask = keep[:, None, None, :]  # [n, 1, 1, p + l]
        context = features if self.modality_projection is None else self.modality_projection(features)  # [n, p, c]
        latents = self.latents.unsqueeze(0).expand(n, -1, -1)  # [n, l, out_dim]
        for layer in self.layers:
            latents = layer(latents, context, attn_mask)  # [n, l, out_dim]
        return self.norm(latents)  # [n, l, out_dim]

    @property
    def block_class(self) -> type[nn.Module]:
        """The repeated perceiver layer class (for wrapping/checkpointing policies)."""
        return PerceiverLayer

    def num_visual_tokens(self, num_patches: int) -> int:
        """Return ``num_latents``, whatever the number of patches."""
        return self.num_latents

    def output_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Pooling connector: all ``num_latents`` outputs are real, so ``None``."""
        return None


def idefics2_connector_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename an Idefics2 connector's weights to :class:`PerceiverResampler` keys.

    Keys are identical once ``perceiver_resampler.`` is dropped.

    Args:
        state_dict: transformers weights, e.g. ``Idefics2Connector.state_dict()`` or a full
            ``Idefics2ForConditionalGeneration`` state dict.
        prefix: Prefix of the connector inside ``state_dict`` (``"model.connector."`` for a full model);
            keys without it are skipped.

    Returns:
        A state dict for ``PerceiverResampler(..., projection=True).load_state_dict(..., strict=True)``.
    """
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            key = key.removeprefix(prefix)
            renamed[key.removeprefix("perceiver_resampler.")] = value
    return renamed
