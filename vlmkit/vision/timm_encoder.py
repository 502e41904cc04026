"""Vision encoders from ``timm`` (``VisionTransformer`` family: ViT, DeiT, CLIP/SigLIP/DINOv2 ports), at any resolution.

The timm model's own modules are reused but ``forward_features`` is re-composed so each image of a padded batch gets
positions for its own patch grid (the absolute table resampled by timm's ``resample_abs_pos_embed`` as its
``dynamic_img_size`` path does, or Idefics2's fractional buckets of it) and a block-diagonal attention mask keeps
padding away from real patches — or, with ``patch_packing``, no padding tokens at all (NaViT-style, one sequence).
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vlmkit.attention import same_segment_mask
from vlmkit.deprecation import renamed_argument
from vlmkit.vision import patch_grid
from vlmkit.vision.patch_grid import PositionEmbedding
from vlmkit.vision.patch_packing import segment_ids


class TimmVisionEncoder(nn.Module):
    """A timm ViT that encodes padded batches of images of different sizes into patch features.

    Images are padded bottom/right to a common ``H, W`` and described by ``patch_mask``; each image's features equal
    those it gets alone at its own size (Idefics2, Sec. 3.3: aspect ratio and resolution preserving). Prefix tokens
    (CLS, registers) take part in attention as in pretraining and are dropped from the output.

    With ``patch_packing=True`` a padded batch is not run padded: each image's prefix tokens and real patches are
    concatenated into one sequence ``[1, sum_i (prefix + p_i), d]`` whose block-diagonal attention mask keeps images
    apart, and the features are scattered back to the padded layout (zeros on padding). Same features, fewer tokens:
    it pays off when padding is a large share of the batch (mixed aspect ratios and resolutions), as every token-wise
    part (projections, MLPs) runs on real tokens only. Memory note: the mask is dense, ``[1, 1, S, S]`` bool with
    ``S`` the real tokens of the whole batch, and timm's attention (fused SDPA or manual) computes all ``S x S``
    scores — more than the padded ``n * s_max**2`` once a batch holds many images — so memory and attention time
    grow with the square of the batch's tokens; pack a modest number of images per call.

    Args:
        model_name: A timm model name whose model is a ``VisionTransformer``, e.g. ``"vit_so400m_patch14_siglip_384"``.
        pretrained: Load timm's pretrained weights for ``model_name``.
        checkpoint_path: Load weights from this local file (``.safetensors``/``.pth``) instead, through timm's
            pretrained-loading path (so its checkpoint filters and position-table resizing apply).
        model_kwargs: Extra ``timm.create_model`` keyword arguments (e.g. ``img_size``, ``depth``).
        feature_layer: Which hidden state to return: 0 = embeddings (after ``norm_pre``), ``i`` = output of block
            ``i``; -1 is the last block *with* the final norm, any other index that entry without it.
            Blocks after it are not run.
        position_embedding: How an image's grid gets positions from the pretrained table: ``"interpolate"``
            (resampled to the image's own grid, timm's ``dynamic_img_size`` behaviour) or ``"bucket"`` (Idefics2's
            fractional-coordinate buckets of the pretrained grid, no resampling).
        patch_packing: Run a padded batch as one sequence of its real tokens (see above) instead of masking padding.
        packing: Deprecated name of ``patch_packing``.

    Raises:
        ValueError: If the model is not a ``VisionTransformer``, uses patch dropout or non-square patches, or
            ``feature_layer`` or ``position_embedding`` is invalid.

    Example:
        >>> encoder = TimmVisionEncoder("vit_tiny_patch16_224", model_kwargs={"img_size": 64, "patch_size": 8,
        ...     "embed_dim": 32, "depth": 2, "num_heads": 2})
        >>> encoder(torch.zeros(2, 3, 32, 48)).shape  # 4 x 6 patches
        torch.Size([2, 24, 32])
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        feature_layer: int = -1,
        position_embedding: PositionEmbedding = "interpolate",
        patch_packing: bool = False,
        packing: bool | None = None,
    ) -> None:
        super().__init__()
        patch_grid.check_position_embedding(position_embedding)
        patch_packing = renamed_argument("TimmVisionEncoder", "packing", packing, "patch_packing", patch_packing, False)
        self.model = timm.create_model(
            model_name,
            pretrained=pretrained or checkpoint_path is not None,
            pretrained_cfg_overlay=dict(file=checkpoint_path) if checkpoint_path else None,
            num_classes=0,
            dynamic_img_size=True,
            **(model_kwargs or {}),
        )
        if not isinstance(self.model, VisionTransformer):
            raise ValueError(
                f"{model_name!r} builds a {type(self.model).__name__}; only VisionTransformer is supported."
            )
        if not isinstance(self.model.patch_drop, nn.Identity):
            raise ValueError("Patch dropout reorders tokens and cannot be combined with patch masks; disable it.")
        patch_height, patch_width = self.model.patch_embed.patch_size
        if patch_height != patch_width:
            raise ValueError(f"Only square patches are supported, got {(patch_height, patch_width)}.")

        self.hidden_size: int = self.model.embed_dim
        self.patch_size: int = patch_height
        pretrained_cfg = self.model.pretrained_cfg
        self.image_mean = tuple(float(v) for v in pretrained_cfg["mean"])
        self.image_std = tuple(float(v) for v in pretrained_cfg["std"])

        self.feature_layer = feature_layer
        self._num_blocks_run = patch_grid.layers_to_run(feature_layer, len(self.model.blocks))
        self.position_embedding: PositionEmbedding = position_embedding
        self.patch_packing = patch_packing
        self.quantization = None  # timm weights load unquantized

    @property
    def block_class(self) -> type[nn.Module]:
        """The transformer block class, e.g. timm's ``Block``."""
        return type(self.model.blocks[0])

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode padded images ``[n, 3, H, W]`` into one feature per patch ``[n, (H/patch) * (W/patch), d]``.

        The :class:`~vlmkit.interfaces.VisionEncoder` contract: ``patch_mask [n, H/patch, W/patch]`` is True on real
        patches (a top-left rectangle per image, None: all real); padding rows hold unspecified values (zeros with
        ``patch_packing``).

        Raises:
            ValueError: If ``H``/``W`` are not multiples of ``patch_size`` or ``patch_mask`` is malformed.
        """
        model = self.model
        grid_sizes = patch_grid.real_grid_sizes(
            pixel_values, patch_mask, self.patch_size
        )  # [n, 2] (rows, cols) of real patches
        n = pixel_values.shape[0]

        x = model.patch_embed(pixel_values)  # [n, rows, cols, d] (NHWC: dynamic_img_size)
        rows, cols = x.shape[1:3]
        x = x.flatten(1, 2)  # [n, rows*cols, d]
        prefix = [token.expand(n, -1, -1) for token in (model.cls_token, model.reg_token) if token is not None]
        if model.pos_embed is not None:
            num_embedded_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
            patch_positions, prefix_positions = self._positions(grid_sizes, rows, cols, num_embedded_prefix)
            x = x + patch_positions
            if prefix and num_embedded_prefix:  # CLS/registers share the table: add their rows
                prefix = [torch.cat(prefix, dim=1) + prefix_positions]
        x = torch.cat([*prefix, x], dim=1)  # [n, prefix + rows*cols, d]
        x = model.norm_pre(model.pos_drop(x))
        x = patch_grid.run_on_real_patches(
            x,
            patch_mask,
            model.num_prefix_tokens,
            self.patch_packing,
            masked=lambda x, real: self._encode(x, None if real is None else same_segment_mask(real)),  # [n, 1, s, s]
            packed=lambda packed, lengths: self._encode(packed, _segment_mask(lengths)),
        )
        return x[:, model.num_prefix_tokens :]  # [n, rows*cols, d]

    def _encode(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The blocks up to ``feature_layer`` (and the final norm for -1) over ``x`` ``[b, s, d]``."""
        model = self.model
        for block in model.blocks[: self._num_blocks_run]:  # activation checkpointing wraps them (block_class)
            x = block(x, attn_mask=attn_mask)
        if self.feature_layer == -1:
            x = model.norm(x)
        return x

    def _positions(
        self, grid_sizes: torch.Tensor, rows: int, cols: int, num_embedded_prefix: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image patch positions ``[n, rows*cols, d]`` (zero on padding) and prefix-token rows ``[1, p, d]``."""
        model = self.model
        table = model.pos_embed  # [1, prefix? + h0*w0, d]
        prefix_positions = table[:, :num_embedded_prefix]
        old_size = model.patch_embed.grid_size

        if self.position_embedding == "bucket":
            position_ids = patch_grid.bucket_position_ids(grid_sizes, rows, cols, tuple(old_size))  # [n, rows*cols]
            real = patch_grid.rectangle_mask(grid_sizes, rows, cols).flatten(1)  # [n, rows*cols]
            positions = F.embedding(position_ids, table[0, num_embedded_prefix:])  # [n, rows*cols, d]
            return positions * real[..., None].to(positions.dtype), prefix_positions

        def resample(h: int, w: int) -> torch.Tensor:  # [1, h*w, d], exactly as forward_features does it
            resized = resample_abs_pos_embed(
                table, new_size=(h, w), old_size=old_size, num_prefix_tokens=num_embedded_prefix
            )
            return resized[:, num_embedded_prefix:]

        return patch_grid.positions_per_grid(grid_sizes, rows, cols, table, resample), prefix_positions


def _segment_mask(lengths: torch.Tensor) -> torch.Tensor | None:
    """``[1, 1, S, S]`` block-diagonal bool mask for packed segments of ``lengths``; None for a single image."""
    return same_segment_mask(segment_ids(lengths)) if len(lengths) > 1 else None
