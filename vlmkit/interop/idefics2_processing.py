"""Idefics2's processor settings on the vlmkit side, and its model inputs in vlmkit's layout.

vlmkit's :class:`~vlmkit.data.ImageProcessor` and Idefics2's ``Idefics2ImageProcessor`` agree exactly (rescale and
normalisation) on images that need no resizing; by design they differ in how they resize and split (vlmkit keeps the
aspect ratio and snaps sides to the patch size with bicubic resampling; Idefics2 resizes bilinearly without snapping,
raises each side to ``shortest_edge`` on its own, masks the partial edge patches, and resizes each crop of a split
image on its own). A model imported from Idefics2 takes Idefics2's own inputs through :func:`from_idefics2_inputs`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vlmkit.data.image_processing import ImageProcessor

if TYPE_CHECKING:
    from transformers import Idefics2Processor, PreTrainedTokenizerBase

    from vlmkit.data.processor import VLMProcessor
    from vlmkit.model import VisionLanguageModel

logger = logging.getLogger(__name__)

__all__ = ["IDEFICS2_CHAT_TEMPLATE", "Idefics2ProcessorSettings", "from_idefics2_inputs"]

IDEFICS2_CHAT_TEMPLATE = (
    "{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
"""The chat template shipped with HuggingFaceM4/idefics2-8b (``User:``/``Assistant:`` turns ending with
``<end_of_utterance>``, the layout vlmkit's ``ChatTemplate`` renders), saved with exported processors."""


@dataclass(frozen=True)
class Idefics2ProcessorSettings:
    """The image settings of an Idefics2 processor, in vlmkit's terms.

    Attributes:
        max_image_size: Idefics2's ``size["longest_edge"]`` (980; 384 in pretraining stage 1).
        min_image_size: Idefics2's ``size["shortest_edge"]`` (378).
        image_mean: Per-channel mean applied to pixels in ``[0, 1]`` (Idefics2's rescale factor folded in).
        image_std: Per-channel std applied to pixels in ``[0, 1]``.
        image_splitting: Idefics2's ``do_image_splitting`` (4 crops + the whole image).
    """

    max_image_size: int = 980
    min_image_size: int = 378
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_splitting: bool = False

    @classmethod
    def from_pretrained(cls, path_or_name: str) -> Idefics2ProcessorSettings:
        """Read the image processor config of a checkpoint (``preprocessor_config.json`` or ``processor_config.json``).

        A checkpoint without one gets Idefics2's defaults (378..980 px, mean = std = 0.5, no splitting), logged.

        Raises:
            ValueError: If the config uses a resize mode other than ``shortest_edge``/``longest_edge``.
        """
        from transformers import AutoImageProcessor

        try:
            image_processor = AutoImageProcessor.from_pretrained(path_or_name, trust_remote_code=False)
        except OSError:
            logger.warning("%s has no image processor config: using Idefics2's defaults", path_or_name)
            return cls()
        config = image_processor.to_dict()
        config["size"] = {key: getattr(image_processor.size, key, None) for key in ("shortest_edge", "longest_edge")}
        return cls.from_dict(config, source=f"{path_or_name} image processor")

    @classmethod
    def from_dict(cls, config: dict[str, Any], source: str = "preprocessor config") -> Idefics2ProcessorSettings:
        """Settings from an ``Idefics2ImageProcessor`` config dict (``size``, mean/std, rescale, splitting)."""
        size = config.get("size", {"shortest_edge": 378, "longest_edge": 980})
        if not size.get("longest_edge") or not size.get("shortest_edge"):
            raise ValueError(f"{source}: size={size} needs 'shortest_edge' and 'longest_edge'")
        scale = 255.0 * config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) else 1.0
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if config.get("do_normalize", True):
            mean, std = config.get("image_mean", (0.5, 0.5, 0.5)), config.get("image_std", (0.5, 0.5, 0.5))
        # Idefics2: (x * r - mean) / std with x in [0, 255]; vlmkit: (x / 255 - mean') / std'
        return cls(
            max_image_size=int(size["longest_edge"]),
            min_image_size=int(size["shortest_edge"]),
            image_mean=tuple(float(m) / scale for m in mean),
            image_std=tuple(float(s) / scale for s in std),
            image_splitting=bool(config.get("do_image_splitting", False)),
        )

    def image_processor(self, patch_size: int) -> ImageProcessor:
        """The vlmkit ``ImageProcessor`` with these sizes and this normalisation."""
        return ImageProcessor(patch_size, self.image_mean, self.image_std, self.max_image_size, self.min_image_size)

    def vlm_processor(self, vlm: VisionLanguageModel) -> VLMProcessor:
        """The ``VLMProcessor`` for ``vlm`` with these settings and Idefics2's plain split layout."""
        from vlmkit.data.processor import VLMProcessor

        image_processor = self.image_processor(vlm.vision_encoder.patch_size)
        return VLMProcessor(vlm.tokenizer, image_processor, vlm.num_image_tokens, crop_markers=False)

    def processor(self, tokenizer: PreTrainedTokenizerBase, image_seq_len: int) -> Idefics2Processor:
        """The transformers ``Idefics2Processor`` with these settings (``tokenizer`` may gain Idefics2's tokens)."""
        from transformers import Idefics2ImageProcessor, Idefics2Processor

        image_processor = Idefics2ImageProcessor(
            do_image_splitting=self.image_splitting,
            size={"shortest_edge": self.min_image_size, "longest_edge": self.max_image_size},
            image_mean=list(self.image_mean),
            image_std=list(self.image_std),
        )
        return Idefics2Processor(
            image_processor, tokenizer, image_seq_len=image_seq_len, chat_template=IDEFICS2_CHAT_TEMPLATE
        )


def from_idefics2_inputs(
    pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor | None, patch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Idefics2's image inputs -> vlmkit's ``pixel_values`` and ``patch_mask``, the same images in the same order.

    As ``Idefics2Model`` does, all-zero images (padding) are dropped and a patch is real when all its pixels are;
    sides are cropped to multiples of ``patch_size`` (the partial edge patches Idefics2's convolution never sees).

    Args:
        pixel_values: ``[b, N, 3, H, W]`` (``N`` images per sample, zero-padded).
        pixel_attention_mask: ``[b, N, H, W]``, 1 on real pixels (None: all real).
        patch_size: The vision tower's patch size.

    Returns:
        ``pixel_values [n, 3, H', W']`` and ``patch_mask [n, H'/patch, W'/patch]`` for the ``n`` real images.
    """
    b, num, channels, height, width = pixel_values.shape
    pixels = pixel_values.reshape(b * num, channels, height, width)
    real_images = (pixels != 0).flatten(1).any(1)  # [b*N]
    if pixel_attention_mask is None:
        pixel_attention_mask = torch.ones(b, num, height, width, dtype=torch.bool, device=pixels.device)
    mask = pixel_attention_mask.reshape(b * num, height, width)[real_images].bool()  # [n, H, W]
    rows, cols = height // patch_size, width // patch_size
    mask = mask[:, : rows * patch_size, : cols * patch_size]
    patch_mask = mask.reshape(-1, rows, patch_size, cols, patch_size).all(4).all(2)  # [n, rows, cols]
    return pixels[real_images, :, : rows * patch_size, : cols * patch_size], patch_mask
