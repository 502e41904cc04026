"""Idefics3's and SmolVLM's processor settings on the vlmkit side, their chat templates, and their model inputs.

Both processors tile images the same way (:mod:`vlmkit.data.tiling`: vlmkit computes the tile grid exactly as
transformers does, so the token ids agree) and write the same image text (``<fake_token_around_image>``,
``<row_i_col_j>``, ``<global-img>``; vlmkit's ``processor_rules="idefics3"``). Pixels differ by design where
transformers resizes twice (to ``size["longest_edge"]``, then to multiples of the tile) and vlmkit once, from the
original image; tiles that need no resizing agree exactly. A model imported from either takes their own inputs
through :func:`from_idefics3_inputs`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from vlmkit.data.image_processing import ImageProcessor
from vlmkit.deprecation import renamed_argument, warn_deprecated
from vlmkit.interop.idefics2_processing import image_inputs

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, ProcessorMixin

    from vlmkit.data.processor import VLMProcessor
    from vlmkit.model import VisionLanguageModel

logger = logging.getLogger(__name__)

__all__ = [
    "IDEFICS3_CHAT_TEMPLATE",
    "SMOLVLM_CHAT_TEMPLATE",
    "Idefics3Family",
    "Idefics3ProcessorSettings",
    "from_idefics3_inputs",
]

Idefics3Family = Literal["idefics3", "smolvlm"]
"""A checkpoint of Idefics3's architecture: ``Idefics3ForConditionalGeneration`` (Idefics3, SmolVLM v1) or
``SmolVLMForConditionalGeneration`` (SmolVLM2)."""

IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
"""The chat template of HuggingFaceM4/Idefics3-8B-Llama3: Idefics2's ``User:``/``Assistant:`` turns after Llama 3's
``<|begin_of_text|>``. Used for exports of models without a template of their own."""

SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
"""The chat template of the SmolVLM-256M/500M-Instruct checkpoints (and transformers' SmolVLM processor tests):
``<|im_start|>`` (SmolLM2's BOS) once, then ``User:``/``Assistant:`` turns ending with ``<end_of_utterance>\\n``."""

_CHAT_TEMPLATES = {"idefics3": IDEFICS3_CHAT_TEMPLATE, "smolvlm": SMOLVLM_CHAT_TEMPLATE}


@dataclass(frozen=True, init=False)
class Idefics3ProcessorSettings:
    """The image settings of an Idefics3 or SmolVLM processor, in vlmkit's terms.

    Attributes:
        family: Which processor and model classes the checkpoint uses (:data:`Idefics3Family`).
        tile_size: transformers' ``max_image_size["longest_edge"]``: the side of a tile (the vision encoder's
            resolution; Idefics3-8B 364, SmolVLM-256M/500M 512).
        max_image_size: transformers' ``size["longest_edge"]``: the longest side every image is resized to before
            tiling (Idefics3-8B 1456, SmolVLM-256M/500M 2048).
        image_mean: Per-channel mean applied to pixels in ``[0, 1]`` (the rescale factor folded in).
        image_std: Per-channel std applied to pixels in ``[0, 1]``.
        split_images: transformers' ``do_image_splitting`` (tiles + the whole image; else one tile per image).
    """

    family: Idefics3Family = "idefics3"
    tile_size: int = 364
    max_image_size: int = 1456
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    split_images: bool = True

    def __init__(
        self,
        family: Idefics3Family = "idefics3",
        tile_size: int = 364,
        max_image_size: int = 1456,
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        split_images: bool = True,
        *,
        image_splitting: bool | None = None,
    ) -> None:
        if family not in _CHAT_TEMPLATES:
            raise ValueError(f"family must be 'idefics3' or 'smolvlm', got {family!r}")
        owner = "Idefics3ProcessorSettings"
        split_images = renamed_argument(owner, "image_splitting", image_splitting, "split_images", split_images, True)
        values = {"family": family, "tile_size": tile_size, "max_image_size": max_image_size}
        values.update(image_mean=tuple(image_mean), image_std=tuple(image_std), split_images=split_images)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def image_splitting(self) -> bool:
        """Deprecated name of :attr:`split_images`."""
        warn_deprecated("Idefics3ProcessorSettings.image_splitting is now split_images")
        return self.split_images

    @classmethod
    def from_pretrained(cls, path_or_name: str) -> Idefics3ProcessorSettings:
        """Read a checkpoint's image processor config and model type.

        Raises:
            ValueError: If the checkpoint is of another model type, or its image processor does not resize
                (``do_resize=false``) or lacks a size.
        """
        from transformers import AutoConfig, AutoImageProcessor

        model_type = AutoConfig.from_pretrained(path_or_name, trust_remote_code=False).model_type
        if model_type not in _CHAT_TEMPLATES:
            raise ValueError(f"{path_or_name!r} holds a {model_type!r} checkpoint, not 'idefics3' or 'smolvlm'")
        image_processor = AutoImageProcessor.from_pretrained(path_or_name, trust_remote_code=False)
        config = image_processor.to_dict()
        return cls.from_dict(config, family=model_type, source=f"{path_or_name} image processor")

    @classmethod
    def from_dict(
        cls, config: dict[str, Any], family: Idefics3Family = "idefics3", source: str = "preprocessor config"
    ) -> Idefics3ProcessorSettings:
        """Settings from an ``Idefics3ImageProcessor`` config dict (sizes, mean/std, rescale, splitting).

        Raises:
            ValueError: Naming ``source`` if it does not resize or a size lacks ``longest_edge``.
        """
        if not config.get("do_resize", True):
            raise ValueError(f"{source}: do_resize=false is not supported (vlmkit tiles images resized as Idefics3)")
        size, tile = config.get("size") or {}, config.get("max_image_size") or {}
        size, tile = _as_dict(size), _as_dict(tile)
        if not size.get("longest_edge") or not tile.get("longest_edge"):
            raise ValueError(f"{source}: size={size} and max_image_size={tile} both need 'longest_edge'")
        scale = 255.0 * config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) else 1.0
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if config.get("do_normalize", True):
            mean, std = config.get("image_mean", (0.5, 0.5, 0.5)), config.get("image_std", (0.5, 0.5, 0.5))
        return cls(  # Idefics3: (x * r - mean) / std with x in [0, 255]; vlmkit: (x / 255 - mean') / std'
            family=family,
            tile_size=int(tile["longest_edge"]),
            max_image_size=int(size["longest_edge"]),
            image_mean=tuple(float(m) / scale for m in mean),
            image_std=tuple(float(s) / scale for s in std),
            split_images=bool(config.get("do_image_splitting", True)),
        )

    @property
    def chat_template(self) -> str:
        """The family's published chat template (for checkpoints and exports without one)."""
        return _CHAT_TEMPLATES[self.family]

    def image_processor(self, patch_size: int) -> ImageProcessor:
        """The vlmkit ``ImageProcessor`` tiling with these sizes and this normalisation."""
        return ImageProcessor(
            patch_size,
            self.image_mean,
            self.image_std,
            max_image_size=self.max_image_size,
            min_image_size=self.tile_size,
            tile_size=self.tile_size,
        )

    def vlm_processor(self, vlm: VisionLanguageModel) -> VLMProcessor:
        """The ``VLMProcessor`` for ``vlm`` with these settings, Idefics3's image text and ``vlm``'s chat template.

        For an imported checkpoint the token ids are those of its own processor (call it with
        ``split_images=settings.split_images``).
        """
        from vlmkit.data.processor import VLMProcessor

        return VLMProcessor(
            vlm.tokenizer,
            self.image_processor(vlm.vision_encoder.patch_size),
            vlm.num_image_tokens,
            crop_markers=True,
            chat_template=vlm.chat_template,
            processor_rules="idefics3",
        )

    def processor(self, tokenizer: PreTrainedTokenizerBase, image_seq_len: int, chat_template: str) -> ProcessorMixin:
        """The transformers ``Idefics3Processor`` or ``SmolVLMProcessor`` with these settings.

        ``tokenizer`` may gain the image tokens (Idefics3's processor adds them).
        """
        image_processor_kwargs = {
            "do_image_splitting": self.split_images,
            "size": {"longest_edge": self.max_image_size},
            "max_image_size": {"longest_edge": self.tile_size},
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }
        if self.family == "idefics3":
            from transformers import Idefics3ImageProcessor, Idefics3Processor

            image_processor = Idefics3ImageProcessor(**image_processor_kwargs)
            return Idefics3Processor(image_processor, tokenizer, image_seq_len, chat_template=chat_template)
        from transformers import SmolVLMImageProcessor, SmolVLMProcessor
        from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

        image_processor = SmolVLMImageProcessor(**image_processor_kwargs)
        video_processor = SmolVLMVideoProcessor(image_mean=list(self.image_mean), image_std=list(self.image_std))
        return SmolVLMProcessor(image_processor, tokenizer, video_processor, image_seq_len, chat_template=chat_template)


def from_idefics3_inputs(
    pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor | None, patch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Idefics3's (and SmolVLM's) image inputs -> vlmkit's ``pixel_values`` and ``patch_mask``, in the same order.

    As ``Idefics3Model`` does, all-zero images (padding) are dropped and a patch is real when any of its pixels is.

    Args:
        pixel_values: ``[b, N, 3, H, W]`` (``N`` views per sample: every image's tiles and global view, zero-padded).
        pixel_attention_mask: ``[b, N, H, W]``, 1 on real pixels (None: all real).
        patch_size: The vision tower's patch size.

    Returns:
        ``pixel_values [n, 3, H', W']`` and ``patch_mask [n, H'/patch, W'/patch]`` for the ``n`` real views.
    """
    return image_inputs(pixel_values, pixel_attention_mask, patch_size, partial_patches="real")


def _as_dict(size: Any) -> dict[str, Any]:
    """A transformers size (a dict or a ``SizeDict``) as a dict."""
    if isinstance(size, dict):
        return size
    return {key: getattr(size, key, None) for key in ("longest_edge", "height", "width")}
