"""Cross-attention fusion: Flamingo-style gated cross-attention blocks before every k-th decoder layer.

Paper section 3.2 (Table 3, Finding 2): text cross-attends to the visual tokens from blocks interleaved
with the LM's layers. The blocks are attached to the existing decoder layers with forward pre-hooks, so
the LM's code and state-dict keys are untouched and the new blocks live under ``fusion.blocks``. Tanh
gates start at 0, so an untrained fused model is exactly the LM. Each text token sees only the image
that precedes it (or all preceding images), as Flamingo's media masking; a token that sees no image (text
before the first image, rows without images, padding) passes every block unchanged, as mllama's
``full_text_row_masked_out_mask``, so a row's result never depends on the rest of the batch. Everything a
block computes, the image keys/values included, runs inside its ``forward`` (one FSDP unit, whose hooks gather
its weights); in generation the keys/values the prompt's forward returned are reused by later steps.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlmkit.interfaces import LanguageModel, LanguageModelOutput

MediaMasking = Literal["preceding", "all_preceding"]


class GatedCrossAttentionBlock(nn.Module):
    """``x += tanh(a) * attn(norm(x), visual); x += tanh(b) * ff(norm(x))`` with ``a = b = 0`` at init.

    Both updates are zeroed on tokens that may attend to no visual token, which leave the block unchanged.

    Args:
        dim: LM hidden size.
        visual_dim: Width of the visual tokens.
        num_heads: Attention heads.
        ff_mult: Feed-forward width as a multiple of ``dim``.
        gate_init: Initial ``a`` and ``b`` (0: the block starts as the identity).
    """

    def __init__(self, dim: int, visual_dim: int, num_heads: int = 8, ff_mult: int = 4, gate_init: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the LM hidden size {dim}")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.kv_proj = nn.Linear(visual_dim, 2 * dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_mult * dim, bias=False), nn.GELU(), nn.Linear(ff_mult * dim, dim, bias=False)
        )
        self.attn_gate = nn.Parameter(torch.full((1,), float(gate_init)))
        self.ff_gate = nn.Parameter(torch.full((1,), float(gate_init)))

    def keys_values(self, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project visual tokens ``[m, visual_dim]`` to keys and values ``[heads, m, head_dim]``.

        Called from :meth:`forward`; calling it directly bypasses the module's hooks (e.g. FSDP's weight gathering).
        """
        k, v = self.kv_proj(visual).chunk(2, dim=-1)  # [m, d] each
        shape = (visual.shape[0], self.num_heads, -1)
        # contiguous: a module's outputs should not be views (FSDP2 hooks them for the backward pass)
        return k.view(shape).transpose(0, 1).contiguous(), v.view(shape).transpose(0, 1).contiguous()

    def forward(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        visual: torch.Tensor | None = None,
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Update text states ``x [b, s, d]`` from the visual tokens; return them and the image keys/values.

        Args:
            x: Text hidden states ``[b, s, d]``.
            allowed: ``[b, s, m]``, which visual tokens each text token may attend to. Tokens with none (text before
                the first image, rows without images, padding) leave the block exactly as they entered it.
            visual: Visual tokens ``[m, visual_dim]``, projected to keys/values here; or
            keys_values: Keys and values ``[heads, m, head_dim]`` a previous call returned (cached decoding).

        Returns:
            The updated states ``[b, s, d]`` and the keys/values (for reuse in later decoding steps).
        """
        if (visual is None) == (keys_values is None):
            raise ValueError("give exactly one of visual (tokens to project) or keys_values (a previous call's)")
        keys, values = self.keys_values(visual) if keys_values is None else keys_values
        b, s, d = x.shape
        q = self.q_proj(self.norm(x)).view(b, s, self.num_heads, -1).transpose(1, 2)  # [b, h, s, hd]
        has_media = allowed.any(-1, keepdim=True)  # [b, s, 1]
        mask = (allowed | ~has_media).unsqueeze(1)  # [b, 1, s, m]; rows without media attend anywhere, then zeroed
        k, v = keys.unsqueeze(0).expand(b, -1, -1, -1), values.unsqueeze(0).expand(b, -1, -1, -1)  # [b, h, m, hd]
        attended = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask)  # [b, h, s, hd]
        keep = has_media.to(x.dtype)  # [b, s, 1]: 0 where no image is seen (mllama's full-text-row mask)
        attended = self.o_proj(attended.transpose(1, 2).reshape(b, s, d))  # [b, s, d]
        x = x + torch.tanh(self.attn_gate) * attended * keep
        x = x + torch.tanh(self.ff_gate) * self.ff(self.ff_norm(x)) * keep
        return x, (keys, values)


class CrossAttentionFusion(nn.Module):
    """Insert gated cross-attention blocks before every ``every_n_layers``-th decoder layer.

    Each image stands as one ``<image>`` marker in the text (``tokens_per_image = 1``); its visual tokens
    (any connector's output) are attended to by the text that follows it.

    Args:
        every_n_layers: A block before layers 0, k, 2k, ... (Idefics1/OpenFlamingo: 4).
        num_heads: Heads of each cross-attention.
        ff_mult: Feed-forward width multiple of each block.
        media_masking: ``preceding``: a token attends to the last image before it (Flamingo);
            ``all_preceding``: to every image before it.
        gate_init: Initial value of every tanh gate. 0 (Flamingo) keeps a pretrained LM exactly as it was; an LM
            trained from scratch has nothing to preserve, and with closed gates the whole visual path (blocks,
            connector, encoder) gets gradients scaled by ``tanh(gate)`` -- so small that Adam's ``eps`` swallows
            them and the gates never open (toy recipes use 0.5).
    """

    supports_packing = False
    """Packed rows would need per-sample media masks across samples: not supported."""

    def __init__(
        self,
        every_n_layers: int = 4,
        num_heads: int = 8,
        ff_mult: int = 4,
        media_masking: MediaMasking = "preceding",
        gate_init: float = 0.0,
    ) -> None:
        super().__init__()
        if every_n_layers < 1:
            raise ValueError(f"every_n_layers must be >= 1, got {every_n_layers}")
        if media_masking not in ("preceding", "all_preceding"):
            raise ValueError(f"media_masking={media_masking!r}; expected 'preceding' or 'all_preceding'")
        self.every_n_layers = every_n_layers
        self.num_heads = num_heads
        self.ff_mult = ff_mult
        self.media_masking = media_masking
        self.gate_init = gate_init
        self.blocks = nn.ModuleList()
        self._context: dict[str, Any] | None = None  # set for the duration of one forward
        self._generation: dict[str, Any] | None = None  # image keys/values and media positions while decoding

    @property
    def block_class(self) -> type[nn.Module]:
        """The inserted block class (for wrapping/checkpointing policies)."""
        return GatedCrossAttentionBlock

    def bind(self, language_model: LanguageModel, visual_dim: int) -> None:
        """Create one block per ``every_n_layers`` decoder layers and hook it in front of that layer."""
        if len(self.blocks):
            raise RuntimeError("this CrossAttentionFusion is already bound to a language model")
        layers = language_model.decoder_layers()
        for index in range(0, len(layers), self.every_n_layers):
            block = GatedCrossAttentionBlock(
                language_model.hidden_size, visual_dim, self.num_heads, self.ff_mult, self.gate_init
            )
            self.blocks.append(block)
            layers[index].register_forward_pre_hook(self._hook(len(self.blocks) - 1), with_kwargs=True)

    def tokens_per_image(self, num_visual_tokens: int) -> int:
        """One marker token per image."""
        return 1

    def _hook(self, block_index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if self._context is None:
                return None
            context = self._context
            hidden = args[0] if args else kwargs.get("hidden_states")
            if hidden is None:
                raise TypeError(
                    f"{type(module).__name__} was called without its hidden states as first positional argument or "
                    "`hidden_states=`: cannot insert a cross-attention block in front of it"
                )
            block = self.blocks[block_index]
            cached = context["keys_values"][block_index]
            visual = context["visual"] if cached is None else None
            hidden, context["keys_values"][block_index] = block(hidden, context["allowed"], visual, cached)
            if args:
                return (hidden, *args[1:]), kwargs
            kwargs["hidden_states"] = hidden
            return args, kwargs

        return hook

    def _media_index(self, image_token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global index of the latest image at or before each token ``[b, s]`` (-1: none) and image offsets ``[b]``."""
        counts = image_token_mask.long().cumsum(-1)  # [b, s]
        per_sample = image_token_mask.long().sum(-1)  # [b]
        offsets = per_sample.cumsum(0) - per_sample  # [b]
        return torch.where(counts > 0, counts - 1 + offsets[:, None], torch.full_like(counts, -1)), offsets

    def _allowed(self, media: torch.Tensor, first: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Whether token ``(b, s)`` may attend to visual token ``j`` of image ``owner[j]``: ``[b, s, m]``."""
        own = owner[None, None, :]  # [1, 1, m]
        if self.media_masking == "preceding":
            return own == media[..., None]
        return (own <= media[..., None]) & (own >= first[:, None, None]) & (media[..., None] >= 0)

    def forward(
        self,
        language_model: LanguageModel,
        inputs_embeds: torch.Tensor,
        image_token_mask: torch.Tensor,
        visual_tokens: torch.Tensor | None,
        visual_mask: torch.Tensor | None = None,
        **lm_kwargs: Any,
    ) -> LanguageModelOutput:
        """Run the LM with its hooked blocks attending to ``visual_tokens [n, v, d_visual]``.

        With ``use_cache`` the image keys/values and each sequence's latest image are kept, so later
        decoding steps (called without images) keep attending to them without recomputing.
        """
        num_markers = int(image_token_mask.sum())
        if (
            visual_tokens is None
            and num_markers == 0
            and self._generation is not None
            and lm_kwargs.get("cache") is not None
        ):
            state = self._generation  # a decoding step: reuse the prompt's images
            media = state["media"][:, None].expand(-1, inputs_embeds.shape[1])  # [b, s]
            allowed = self._allowed(media, state["first"], state["owner"])
            return self._run(language_model, inputs_embeds, None, list(state["keys_values"]), allowed, lm_kwargs)
        num_images = 0 if visual_tokens is None else visual_tokens.shape[0]
        if num_markers != num_images:
            raise ValueError(f"the text holds {num_markers} image marker tokens but {num_images} images were given")
        self._generation = None
        if num_images == 0:  # every token would pass every block unchanged
            return language_model(inputs_embeds=inputs_embeds, **lm_kwargs)
        v = visual_tokens.shape[1]
        real = visual_mask.flatten() if visual_mask is not None else torch.ones(num_images * v, dtype=torch.bool)
        real = real.to(inputs_embeds.device)
        flat = visual_tokens.flatten(0, 1)[real]  # [m, d_visual]
        owner = torch.arange(num_images, device=inputs_embeds.device).repeat_interleave(v)[real]  # [m]
        media, offsets = self._media_index(image_token_mask)  # [b, s], [b]
        allowed = self._allowed(media, offsets, owner)  # [b, s, m]
        keys_values: list[Any] = [None] * len(self.blocks)  # each block projects the images in its own forward
        out = self._run(language_model, inputs_embeds, flat, keys_values, allowed, lm_kwargs)
        if lm_kwargs.get("use_cache"):
            if any(kv is None for kv in keys_values):
                raise RuntimeError("a cross-attention block did not run: its decoder layer was skipped")
            self._generation = {"keys_values": keys_values, "media": media[:, -1], "first": offsets, "owner": owner}
        return out

    def _run(self, language_model, inputs_embeds, visual, keys_values, allowed, lm_kwargs):
        """Run the LM, its hooked blocks reading ``visual`` or the cached ``keys_values`` (filled in as they run)."""
        self._context = {"visual": visual, "keys_values": keys_values, "allowed": allowed}
        try:
            return language_model(inputs_embeds=inputs_embeds, **lm_kwargs)
        finally:
            self._context = None
