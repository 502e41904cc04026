"""Vision encoders from ``transformers``: SigLIP, CLIP and the Idefics2/Idefics3/SmolVLM towers, at any resolution.

The backbone's own modules are reused (patch embedding, layers, norms) but the forward pass is ours, so every family
gets the same two things Idefics2 needs (Sec. 3.3): per-image positions computed on the image's own patch grid
(bicubic ``interpolate`` of the pretrained table, or Idefics2's fractional ``bucket`` ids) and a block-diagonal
attention mask so that bottom/right padding never mixes with real patches — or, with ``patch_packing``, no padding
tokens at all: the real patches of all images run as one sequence (NaViT-style).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask
from transformers import AutoConfig, CLIPVisionModel, PreTrainedModel, SiglipVisionModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer
from transformers.models.idefics3.modeling_idefics3 import Idefics3VisionTransformer
from transformers.models.smolvlm.modeling_smolvlm import SmolVLMVisionTransformer
from transformers.utils import cached_file
from transformers.utils.constants import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)

from vlmkit.attention import (
    SEGMENT_SDPA,
    attention_implementation,
    use_segment_sdpa,
    varlen_kwargs,
    with_segments,
)
from vlmkit.deprecation import renamed_argument
from vlmkit.dtypes import parse_dtype
from vlmkit.quantization import Quantization, bitsandbytes_config, keep_compute_dtype, quantized_device_map
from vlmkit.vision.patch_grid import (
    PositionEmbedding,
    bucket_position_ids,
    check_position_embedding,
    layers_to_run,
    positions_per_grid,
    real_grid_sizes,
    run_on_real_patches,
)
from vlmkit.vision.patch_packing import segment_ids

__all__ = ["TransformersVisionEncoder", "bucket_position_ids", "interpolate_positions"]

# model_type -> (vision model class, pixel normalisation used when the checkpoint ships no preprocessor config)
_FAMILIES: dict[str, tuple[type[PreTrainedModel], tuple[list[float], list[float]]]] = {
    "siglip_vision_model": (SiglipVisionModel, (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD)),
    "siglip": (SiglipVisionModel, (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD)),
    "clip_vision_model": (CLIPVisionModel, (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
    "clip": (CLIPVisionModel, (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
    "idefics2_vision": (Idefics2VisionTransformer, (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD)),
    "idefics3_vision": (Idefics3VisionTransformer, (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD)),
    "smolvlm_vision": (SmolVLMVisionTransformer, (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD)),
}
# the scheme each family's pretrained position table was trained with
_NATIVE_POSITIONS: dict[str, PositionEmbedding] = {
    "idefics2_vision": "bucket",
    "idefics3_vision": "bucket",
    "smolvlm_vision": "bucket",
}
_CLS_TOKEN_TYPES = ("clip", "clip_vision_model")


class TransformersVisionEncoder(nn.Module):
    """A ``transformers`` vision tower that encodes padded batches of images of different sizes.

    Images are padded bottom/right to a common ``H, W`` and described by ``patch_mask``. Each image gets position
    embeddings for its own real patch grid and attends only to its own real patches, so its features are those it
    gets alone at its own size (Idefics2, Sec. 3.3: aspect ratio and resolution preserving). CLIP's CLS token is kept
    inside the encoder (it is part of the pretrained computation) and dropped from the output.

    With ``patch_packing=True`` a padded batch is not run padded: the real patches of all images (each with its own CLS
    token for CLIP) form one sequence ``[1, sum_i p_i, d]`` whose block-diagonal attention keeps images apart, and the
    features are scattered back to the padded layout (zeros on padding). Same features, fewer tokens: it pays off
    when padding is a large share of the batch (mixed aspect ratios and resolutions: a batch padded to its largest
    height and width is easily half padding), as every token-wise part (projections, MLPs) runs on real patches only.
    Memory note: ``eager``/``sdpa`` take a dense ``[1, 1, S, S]`` mask (``S`` = real tokens of the whole batch) and
    compute all ``S x S`` scores, more than the padded ``n * s_max**2`` once a batch holds many images, so memory
    and attention time grow with the square of the batch's tokens (``benchmarks/packing.py``, CPU: 16 images, 38% real,
    fwd+bwd 0.9x the padded time with ``sdpa`` but 1.7x with ``eager``). Flash-attention implementations get varlen
    lengths instead (``cu_seq_lens``, no mask: only per-image blocks are computed), ``flex_attention`` a block mask.

    Args:
        name_or_path: A hub id or local directory of a checkpoint (``siglip``, ``siglip_vision_model``, ``clip``,
            ``clip_vision_model``, ``idefics2_vision``, ``idefics3_vision`` or ``smolvlm_vision``; full SigLIP/CLIP
            checkpoints give their vision tower).
        config: Instead of a checkpoint, a config dict with a ``model_type`` key, e.g.
            ``{"model_type": "siglip_vision_model", "hidden_size": 64, ...}``; weights are randomly initialised.
        torch_dtype: Parameter dtype name (``"bfloat16"``, ``"float32"``, ... or ``"auto"`` for the checkpoint's).
        attn_implementation: ``"eager"``, ``"sdpa"``, ``"flash_attention_2"``, ... (transformers' default if None;
            ``"sdpa"``, with a warning, for ``"flash_attention_2"`` without the flash-attn package or CUDA).
        position_embedding: How a grid other than the pretrained square one gets positions: ``"interpolate"``
            (bicubic resampling of the pretrained table, as the Idefics2 paper describes) or ``"bucket"``
            (Idefics2's fractional-coordinate buckets, as its released vision tower uses). None picks the family's
            own scheme: ``"bucket"`` for the Idefics2/Idefics3/SmolVLM towers, ``"interpolate"`` otherwise.
        feature_layer: Which hidden state to return, indexed like transformers' ``hidden_states`` (0 = embeddings,
            ``i`` = output of layer ``i``): -1 is the last layer *with* the post-layernorm applied, any other index
            that entry without it (e.g. -2 for LLaVA's penultimate layer). Layers after it are not run.
        patch_packing: Run a padded batch as one sequence of its real patches (see above) instead of masking padding.
        packing: Deprecated name of ``patch_packing``.
        quantization: Load the checkpoint's linear layers quantized by bitsandbytes (``"nf4"``, ``"fp4"``,
            ``"int8"``); needs ``name_or_path``; the part is then ``frozen`` or adapted (QLoRA). Each process loads
            onto its own GPU (``LOCAL_RANK``).
        compute_dtype: Dtype name of quantized matmuls and the other weights (``"bfloat16"`` on GPU).

    Raises:
        ValueError: If not exactly one of ``name_or_path``/``config`` is given, the model type is not supported, or
            ``feature_layer`` is out of range.

    Example:
        >>> encoder = TransformersVisionEncoder(config={"model_type": "siglip_vision_model", "hidden_size": 64,
        ...     "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "image_size": 64,
        ...     "patch_size": 8})
        >>> encoder(torch.zeros(2, 3, 32, 48)).shape  # 4 x 6 patches
        torch.Size([2, 24, 64])
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        torch_dtype: str | None = None,
        attn_implementation: str | None = None,
        position_embedding: PositionEmbedding | None = None,
        feature_layer: int = -1,
        patch_packing: bool = False,
        quantization: Quantization | None = None,
        compute_dtype: str = "bfloat16",
        packing: bool | None = None,
    ) -> None:
        super().__init__()
        owner = "TransformersVisionEncoder"
        patch_packing = renamed_argument(owner, "packing", packing, "patch_packing", patch_packing, False)
        if (name_or_path is None) == (config is None):
            raise ValueError("Pass exactly one of `name_or_path` (a checkpoint) or `config` (a config dict).")
        if quantization is not None and name_or_path is None:
            raise ValueError("quantization needs a checkpoint (name_or_path): weights are quantized as they load")
        self.quantization = quantization
        check_position_embedding(position_embedding, allow_none=True)

        quantization_config = None
        if quantization is not None:
            compute = parse_dtype(compute_dtype, "vision_encoder.compute_dtype")
            quantization_config = bitsandbytes_config(quantization, compute, "vision_encoder.quantization")
            torch_dtype = torch_dtype or compute_dtype
        attn_implementation = attention_implementation(attn_implementation, "vision_encoder.attn_implementation")
        self.backbone, model_type = _build_backbone(
            name_or_path, config, torch_dtype, attn_implementation, quantization_config
        )
        use_segment_sdpa(self.backbone)  # packed images: attention per image
        if getattr(self.backbone, "head", None) is not None:  # SigLIP's pooling head: unused by patch features
            del self.backbone.head  # (unused weights break DDP and FSDP optimizer state)
            self.backbone.use_head = False
            self._register_load_state_dict_pre_hook(_drop_pooling_head)  # state dicts saved with the head still load
        backbone_config = self.backbone.config
        self.model_type: str = model_type
        self.hidden_size: int = backbone_config.hidden_size
        self.patch_size: int = _square(backbone_config.patch_size, "patch_size")
        self.image_mean, self.image_std = _normalization(name_or_path, model_type)
        self.position_embedding: PositionEmbedding = position_embedding or _NATIVE_POSITIONS.get(
            model_type, "interpolate"
        )
        self.num_prefix_tokens = 1 if model_type in _CLS_TOKEN_TYPES else 0
        num_grid_positions = self.backbone.embeddings.position_embedding.num_embeddings - self.num_prefix_tokens
        self.grid_side = math.isqrt(num_grid_positions)  # the pretrained square grid is grid_side x grid_side

        self.feature_layer = feature_layer
        self._num_layers_run = layers_to_run(feature_layer, len(self.backbone.encoder.layers))
        self.patch_packing = patch_packing

    @property
    def block_class(self) -> type[nn.Module]:
        """The encoder layer class, e.g. ``SiglipEncoderLayer``."""
        return type(self.backbone.encoder.layers[0])

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode padded images ``[n, 3, H, W]`` into one feature per patch ``[n, (H/patch) * (W/patch), d]``.

        The :class:`~vlmkit.interfaces.VisionEncoder` contract: ``patch_mask [n, H/patch, W/patch]`` is True on real
        patches (a top-left rectangle per image, None: all real); padding rows hold unspecified values (zeros with
        ``patch_packing``).

        Raises:
            ValueError: If ``H``/``W`` are not multiples of ``patch_size`` or ``patch_mask`` is malformed, or when
                packing under an attention implementation that takes neither a 4-D mask nor varlen lengths.
        """
        grid_sizes = real_grid_sizes(pixel_values, patch_mask, self.patch_size)  # [n, 2] (rows, cols) of real patches
        n, _, height, width = pixel_values.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        embeddings = self.backbone.embeddings

        patch_embedding = embeddings.patch_embedding
        x = patch_embedding(pixel_values.to(patch_embedding.weight.dtype))  # [n, d, rows, cols]
        x = x.flatten(2).transpose(1, 2)  # [n, rows*cols, d]
        x = x + self._patch_positions(grid_sizes, rows, cols).to(x.dtype)
        if self.num_prefix_tokens:  # CLIP: CLS token with its own position, then the pre-layernorm
            cls = embeddings.class_embedding + embeddings.position_embedding.weight[0]  # [d]
            x = torch.cat([cls.to(x.dtype).expand(n, 1, -1), x], dim=1)  # [n, 1 + rows*cols, d]
            x = self.backbone.pre_layrnorm(x)

        x = run_on_real_patches(
            x,
            patch_mask,
            self.num_prefix_tokens,
            self.patch_packing,
            masked=lambda x, real: self._encode(
                x, None if real is None else _attention_mask(self.backbone.config, x, real)
            ),
            packed=lambda packed, lengths: self._encode(packed, *self._packed_mask(packed, lengths)),
        )
        return x[:, self.num_prefix_tokens :]  # [n, rows*cols, d]

    def _encode(self, x: torch.Tensor, attention_mask: Any = None, layer_kwargs: dict | None = None) -> torch.Tensor:
        """The encoder layers up to ``feature_layer`` (and the post-layernorm for -1) over ``x`` ``[b, s, d]``."""
        for layer in self.backbone.encoder.layers[: self._num_layers_run]:
            x = layer(x, attention_mask, **(layer_kwargs or {}))  # [b, s, d]
        if self.feature_layer == -1:
            x = self.backbone.post_layernorm(x)
        return x

    def _packed_mask(self, packed: torch.Tensor, lengths: torch.Tensor) -> tuple[Any, dict]:
        """Attention mask and layer kwargs keeping the images (segments of ``lengths``) of ``packed`` apart.

        Flash kernels get varlen lengths (``cu_seq_lens``) and no mask; the others a block-diagonal mask from
        transformers' own factory (4-D bool for sdpa, additive for eager, a block mask for flex), which under
        vlmkit's sdpa carries the segments, so each image attends on its own (:func:`~vlmkit.attention.with_segments`).
        """
        config = self.backbone.config
        if "flash" in config._attn_implementation:
            return None, varlen_kwargs(lengths)
        segments = segment_ids(lengths)  # [1, S]
        mask = create_bidirectional_mask(
            config=config,
            inputs_embeds=packed,
            attention_mask=None,
            and_mask_function=lambda batch, head, q, kv: segments[batch, q] == segments[batch, kv],
        )
        block_diagonal = isinstance(mask, BlockMask) or (isinstance(mask, torch.Tensor) and mask.ndim == 4)
        if len(lengths) > 1 and not block_diagonal:  # e.g. a kernel that only takes a 2-D padding mask
            raise ValueError(
                f"packing needs a block-diagonal 4-D attention mask or flash-attention varlen lengths, which "
                f"attn_implementation={config._attn_implementation!r} does not take; use 'sdpa' or 'eager'."
            )
        if config._attn_implementation == SEGMENT_SDPA and isinstance(mask, torch.Tensor):
            mask = with_segments(mask, [lengths.tolist()])  # attention image by image: sum of L_i^2, not S^2
        return mask, {}

    def _patch_positions(self, grid_sizes: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """Position embeddings ``[n, rows*cols, d]`` for each image's own real grid, zero-padded to ``rows x cols``."""
        table = self.backbone.embeddings.position_embedding.weight[self.num_prefix_tokens :]  # [side*side, d]
        if self.position_embedding == "bucket":
            position_ids = bucket_position_ids(grid_sizes, rows, cols, self.grid_side)  # [n, rows*cols]
            return F.embedding(position_ids, table)

        grid = table.reshape(self.grid_side, self.grid_side, -1)  # [side, side, d]
        return positions_per_grid(grid_sizes, rows, cols, table, lambda h, w: interpolate_positions(grid, h, w))


def interpolate_positions(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Bicubically resample a square position grid ``[s, s, d]`` to ``[rows, cols, d]``.

    Matches ``SiglipVisionEmbeddings.interpolate_pos_encoding`` (``align_corners=False``, no antialiasing) and
    returns ``grid`` itself at the pretrained size.
    """
    if (rows, cols) == tuple(grid.shape[:2]):
        return grid
    resized = F.interpolate(grid.permute(2, 0, 1)[None].float(), size=(rows, cols), mode="bicubic", align_corners=False)
    return resized[0].permute(1, 2, 0).to(grid.dtype)  # [rows, cols, d]


def _build_backbone(
    name_or_path: str | None,
    config: dict[str, Any] | None,
    torch_dtype: str | None,
    attn_implementation: str | None,
    quantization_config: Any = None,
) -> tuple[PreTrainedModel, str]:
    """Build (from a config dict) or load (from a checkpoint) the vision model; return it and the model type."""
    if config is not None:
        config = dict(config)
        model_type = config.pop("model_type", None)
        _check_supported(model_type)
        model_config = AutoConfig.for_model(model_type, **config)
    else:
        model_config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
        model_type = model_config.model_type
        _check_supported(model_type)
    model_class = _FAMILIES[model_type][0]
    dtype = parse_dtype(torch_dtype, "vision_encoder.torch_dtype", allow_auto=True)
    kwargs = {"attn_implementation": attn_implementation}

    if config is not None:
        vision_config = getattr(model_config, "vision_config", model_config)  # full siglip/clip -> vision tower
        model = model_class._from_config(vision_config, dtype=None if dtype == "auto" else dtype, **kwargs)
        return model, model_type

    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = quantized_device_map()
    model, info = model_class.from_pretrained(
        name_or_path,
        use_safetensors=True if _has_safetensors(name_or_path) else None,  # None: prefer them, fall back to .bin
        trust_remote_code=False,
        output_loading_info=True,
        **kwargs,
    )
    missing = sorted(k for k in info["missing_keys"] if not k.startswith("head."))  # the pooling head goes unused
    if missing:
        raise ValueError(f"Checkpoint {name_or_path!r} lacks vision weights: {missing[:8]}")
    keep_compute_dtype(model)
    model.train()  # from_pretrained returns eval mode; a part starts in train mode like any nn.Module
    return model, model_type


def _drop_pooling_head(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "backbone.head.")]:
        del state_dict[key]


def _check_supported(model_type: str | None) -> None:
    if model_type not in _FAMILIES:
        raise ValueError(f"Unsupported vision model_type {model_type!r}; supported: {', '.join(sorted(_FAMILIES))}.")


def _has_safetensors(name_or_path: str) -> bool:
    return os.path.isdir(name_or_path) and any(name.endswith(".safetensors") for name in os.listdir(name_or_path))


def _normalization(
    name_or_path: str | None, model_type: str
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Pixel mean/std from the checkpoint's ``preprocessor_config.json``, else the family's standard values."""
    mean, std = _FAMILIES[model_type][1]
    if name_or_path is not None:
        try:
            path = cached_file(name_or_path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        except OSError:  # e.g. offline with nothing cached: fall back to the family's values
            path = None
        if path is not None:
            with open(path) as f:
                processor = json.load(f)
            mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _square(value: int | list[int] | tuple[int, int], name: str) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"Only square {name} is supported, got {value}.")
    return int(value[0])


def _attention_mask(config: Any, embeds: torch.Tensor, real: torch.Tensor) -> Any:
    """The backbone's attention mask letting real tokens see only real ones (and padding only padding).

    ``real`` is ``[n, s]`` bool. Masks for eager/sdpa/flex come from transformers' own factory with a block-diagonal
    "same segment" rule (no fully-masked rows, so no NaNs); varlen flash kernels take the 2-D mask and drop padding.
    """
    if "flash" in config._attn_implementation:
        return create_bidirectional_mask(config=config, inputs_embeds=embeds, attention_mask=real)
    return create_bidirectional_mask(
        config=config,
        inputs_embeds=embeds,
        attention_mask=None,
        and_mask_function=lambda batch, head, q, kv: real[batch, q] == real[batch, kv],
    )
