"""``VLMProcessor``: a conversation with images -> model inputs of one sample.

It joins the image processor and the chat template, and asks the model how many
placeholders each image needs, so data and model can never disagree on layout.
Image splitting is decided per call, so the same weights serve 64 or 5 x 64
visual tokens per image (paper section 3.4, Finding 6).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from vlmkit.data.image_processing import ImageInput, ImageProcessor, ImageViews, ResizeMode
from vlmkit.text.template import ChatTemplate, ImageTokens, SplitImage, Turn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vlmkit.model import VisionLanguageModel
    from vlmkit.text.checkpoint_template import ProcessorRules


class VLMProcessor:
    """Turn ``(images, turns)`` into ``input_ids``, ``labels`` and pixel tensors.

    Args:
        tokenizer: Tokenizer with the VLM special tokens.
        image_processor: Resizes, normalises, splits and (in training) upscales images.
        num_image_tokens: ``(height, width) -> placeholders`` for one processed image.
        train_on: ``"assistant"`` for answer-only loss, ``"all"`` for every text token.
        crop_markers: Mark the crops of split images with ``<row_i_col_j>``/``<global-img>``.
        chat_template: A checkpoint's Jinja chat template (an imported model's ``chat_template``): conversations
            then get exactly the token ids of transformers' processor; ``None``: vlmkit's layout.
        processor_rules: Whose processor's string rules expand a ``chat_template``'s images (``"idefics2"``, or
            ``"idefics3"`` for Idefics3/SmolVLM; see :class:`~vlmkit.text.ChatTemplate`).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: ImageProcessor,
        num_image_tokens: Callable[[int, int], int],
        train_on: Literal["assistant", "all"] = "assistant",
        crop_markers: bool = True,
        chat_template: str | None = None,
        processor_rules: ProcessorRules = "idefics2",
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.template = ChatTemplate(
            tokenizer,
            train_on=train_on,
            crop_markers=crop_markers,
            chat_template=chat_template,
            processor_rules=processor_rules,
        )

    @classmethod
    def from_model(
        cls,
        model: VisionLanguageModel,
        max_image_size: int = 980,
        min_image_size: int = 378,
        train_on: Literal["assistant", "all"] = "assistant",
        crop_markers: bool | None = None,
        upscale_probability: float = 0.0,
        max_upscale: float = 2.0,
        tile_size: int | None = None,
        resize_mode: ResizeMode = "preserve_aspect",
    ) -> VLMProcessor:
        """The processor matching ``model``'s tokenizer, encoder normalisation, image splitting and text layout.

        A model imported from a checkpoint renders with the checkpoint's chat template (``model.chat_template``).
        Split images are tiled when ``tile_size`` (default: the model's ``tile_size``) is set (``max_image_size``
        is then the longest side images are resized to before tiling), and a checkpoint template's images then follow
        Idefics3's processor rules (Idefics2's without tiling). ``crop_markers=None`` marks the crops of split images
        in vlmkit's layout and for a tiling model, not for a model imported with a checkpoint's template without
        tiling (Idefics2's processor has no markers). ``resize_mode="square"`` resizes every image to
        ``max_image_size`` squared (see ``ImageProcessor``).
        """
        encoder = model.vision_encoder
        if tile_size is None:
            tile_size = getattr(model, "tile_size", None)
        image_processor = ImageProcessor(
            encoder.patch_size,
            encoder.image_mean,
            encoder.image_std,
            max_image_size,
            min_image_size,
            upscale_probability=upscale_probability,
            max_upscale=max_upscale,
            tile_size=tile_size,
            resize_mode=resize_mode,
        )
        chat_template = getattr(model, "chat_template", None)
        if crop_markers is None:
            crop_markers = chat_template is None or tile_size is not None
        rules = "idefics3" if tile_size is not None else "idefics2"
        return cls(
            model.tokenizer, image_processor, model.num_image_tokens, train_on, crop_markers, chat_template, rules
        )

    def __call__(
        self,
        images: Sequence[ImageInput],
        turns: Sequence[Turn],
        add_generation_prompt: bool = False,
        split_images: bool = False,
        rng: random.Random | None = None,
    ) -> dict[str, Any]:
        """Process one sample.

        Args:
            images: PIL images or image file paths, in the order of the image segments.
            turns: The conversation.
            add_generation_prompt: End with ``Assistant:`` for generation.
            split_images: Give every image as its crops + the whole image: 4 + 1 views (5x the visual tokens), or
                the tile grid + 1 with a tiling image processor.
            rng: Random source for training augmentation (upscaling); ``None`` for evaluation.

        Returns:
            ``input_ids`` and ``labels`` (``LongTensor [s]``) and ``pixel_values``
            (a list of ``[3, H_i, W_i]`` tensors, in text order, crops before their whole image).
        """
        pixel_values: list[torch.Tensor] = []
        layouts: list[ImageTokens] = []
        for image in images:
            plan, views = self.image_processor.process_views(image, split=split_images, rng=rng)
            layouts.append(image_layout(plan, self.num_image_tokens(plan.height, plan.width)))
            pixel_values.extend(views)
        encoded = self.template.encode(turns, layouts, add_generation_prompt=add_generation_prompt)
        return {
            "input_ids": torch.tensor(encoded.input_ids, dtype=torch.long),
            "labels": torch.tensor(encoded.labels, dtype=torch.long),
            "pixel_values": pixel_values,
        }


def image_layout(views: ImageViews, tokens_per_view: int) -> ImageTokens:
    """The text layout of one image: its placeholder count, or its split layout (crops then the whole image)."""
    return SplitImage(tokens_per_view, views.rows, views.cols) if views.rows else tokens_per_view
