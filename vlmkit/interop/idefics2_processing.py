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
from typing import TYPE_CHECKING, Any, Literal

import torch

from vlmkit.data.image_processing import ImageProcessor
from vlmkit.deprecation import renamed_argument, warn_deprecated

if TYPE_CHECKING:
    from transformers import GenerationConfig, Idefics2Processor, PreTrainedTokenizerBase

    from vlmkit.data.processor import VLMProcessor
    from vlmkit.model import VisionLanguageModel

logger = logging.getLogger(__name__)

__all__ = [
    "IDEFICS2_CHAT_TEMPLATE",
    "Idefics2ProcessorSettings",
    "checkpoint_chat_template",
    "checkpoint_generation_config",
    "checkpoint_stop_token_ids",
    "from_idefics2_inputs",
    "image_inputs",
]

IDEFICS2_CHAT_TEMPLATE = (
    "{% for message in messages %}{{message['role'].capitalize()}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
"""The chat template shipped with HuggingFaceM4/idefics2-8b (its ``processor_config.json``): ``User:``/``Assistant:``
turns ending with ``<end_of_utterance>\n``, ``": "`` after the role unless the turn starts with an image. Saved with
exported processors, and used for imported checkpoints that have no chat template of their own."""


@dataclass(frozen=True, init=False)
class Idefics2ProcessorSettings:
    """The image settings of an Idefics2 processor, in vlmkit's terms.

    Attributes:
        max_image_size: Idefics2's ``size["longest_edge"]`` (980; 384 in pretraining stage 1).
        min_image_size: Idefics2's ``size["shortest_edge"]`` (378).
        image_mean: Per-channel mean applied to pixels in ``[0, 1]`` (Idefics2's rescale factor folded in).
        image_std: Per-channel std applied to pixels in ``[0, 1]``.
        split_images: Idefics2's ``do_image_splitting``: every image as 4 crops + the whole image.
    """

    max_image_size: int = 980
    min_image_size: int = 378
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    split_images: bool = False

    def __init__(
        self,
        max_image_size: int = 980,
        min_image_size: int = 378,
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        split_images: bool = False,
        *,
        image_splitting: bool | None = None,
    ) -> None:
        split_images = renamed_argument(
            "Idefics2ProcessorSettings", "image_splitting", image_splitting, "split_images", split_images, False
        )
        values = (max_image_size, min_image_size, tuple(image_mean), tuple(image_std), split_images)
        for name, value in zip(("max_image_size", "min_image_size", "image_mean", "image_std", "split_images"), values):
            object.__setattr__(self, name, value)

    @property
    def image_splitting(self) -> bool:
        """Deprecated name of :attr:`split_images`."""
        warn_deprecated("Idefics2ProcessorSettings.image_splitting is now split_images")
        return self.split_images

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
            split_images=bool(config.get("do_image_splitting", False)),
        )

    def image_processor(self, patch_size: int) -> ImageProcessor:
        """The vlmkit ``ImageProcessor`` with these sizes and this normalisation."""
        return ImageProcessor(patch_size, self.image_mean, self.image_std, self.max_image_size, self.min_image_size)

    def vlm_processor(self, vlm: VisionLanguageModel) -> VLMProcessor:
        """The ``VLMProcessor`` for ``vlm`` with these settings and Idefics2's plain split layout.

        The text layout is ``vlm``'s: for an imported checkpoint its chat template, so the token ids are those of
        transformers' ``Idefics2Processor``.
        """
        from vlmkit.data.processor import VLMProcessor

        image_processor = self.image_processor(vlm.vision_encoder.patch_size)
        return VLMProcessor(
            vlm.tokenizer,
            image_processor,
            vlm.num_image_tokens,
            crop_markers=False,
            chat_template=vlm.chat_template,
        )

    def processor(
        self, tokenizer: PreTrainedTokenizerBase, image_seq_len: int, chat_template: str = IDEFICS2_CHAT_TEMPLATE
    ) -> Idefics2Processor:
        """The transformers ``Idefics2Processor`` with these settings (``tokenizer`` may gain Idefics2's tokens)."""
        from transformers import Idefics2ImageProcessor, Idefics2Processor

        image_processor = Idefics2ImageProcessor(
            do_image_splitting=self.split_images,
            size={"shortest_edge": self.min_image_size, "longest_edge": self.max_image_size},
            image_mean=list(self.image_mean),
            image_std=list(self.image_std),
        )
        return Idefics2Processor(image_processor, tokenizer, image_seq_len=image_seq_len, chat_template=chat_template)


def checkpoint_chat_template(path_or_name: str, default: str = IDEFICS2_CHAT_TEMPLATE, family: str = "Idefics2") -> str:
    """The chat template ``processor.apply_chat_template`` uses for a checkpoint.

    That is its processor's, else its tokenizer's, else ``default`` (:data:`IDEFICS2_CHAT_TEMPLATE`; logged).
    """
    from transformers import AutoProcessor, AutoTokenizer

    for auto in (AutoProcessor, AutoTokenizer):
        try:
            template = getattr(auto.from_pretrained(path_or_name, trust_remote_code=False), "chat_template", None)
        except (OSError, ValueError):
            continue
        if isinstance(template, str):
            return template
    logger.warning("%s has no chat template: rendering conversations with %s's", path_or_name, family)
    return default


def checkpoint_generation_config(path_or_name: str) -> GenerationConfig | None:
    """The checkpoint's ``generation_config.json``; ``None`` if it has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path_or_name)
    except OSError:
        return None


def checkpoint_stop_token_ids(
    generation_config: GenerationConfig | None, tokenizer: PreTrainedTokenizerBase
) -> tuple[int, ...]:
    """Where generation of an imported checkpoint stops.

    At the generation config's EOS tokens (the tokenizer's EOS without one, logged) and at ``<end_of_utterance>``,
    which ends every turn of Idefics2's chat template.
    """
    from vlmkit.text.tokenizer import END_OF_UTTERANCE_TOKEN

    eos = generation_config.eos_token_id if generation_config is not None else None
    if eos is None:
        logger.warning(
            "no generation_config EOS tokens: generation stops at the tokenizer's EOS and %s", END_OF_UTTERANCE_TOKEN
        )
        eos = tokenizer.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    return tuple(dict.fromkeys([*eos, tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE_TOKEN)]))


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
    return image_inputs(pixel_values, pixel_attention_mask, patch_size, partial_patches="masked")


def image_inputs(
    pixel_values: torch.Tensor,
    pixel_attention_mask: torch.Tensor | None,
    patch_size: int,
    partial_patches: Literal["masked", "real"],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Idefics-style padded image inputs -> vlmkit's; a patch partly real is ``masked`` (Idefics2) or ``real``."""
    b, num, channels, height, width = pixel_values.shape
    pixels = pixel_values.reshape(b * num, channels, height, width)
    real_images = (pixels != 0).flatten(1).any(1)  # [b*N]
    if pixel_attention_mask is None:
        pixel_attention_mask = torch.ones(b, num, height, width, dtype=torch.bool, device=pixels.device)
    mask = pixel_attention_mask.reshape(b * num, height, width)[real_images].bool()  # [n, H, W]
    rows, cols = height // patch_size, width // patch_size
    mask = mask[:, : rows * patch_size, : cols * patch_size]
    patches = mask.reshape(-1, rows, patch_size, cols, patch_size)  # [n, rows, p, cols, p]
    # Idefics2: a patch is real when all its pixels are; Idefics3/SmolVLM: when any is
    patch_mask = patches.all(4).all(2) if partial_patches == "masked" else patches.any(4).any(2)  # [n, rows, cols]
    return pixels[real_images, :, : rows * patch_size, : cols * patch_size], patch_mask
