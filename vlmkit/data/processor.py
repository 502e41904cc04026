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

from vlmkit.data.image_processing import ImageInput, ImageProcessor, ResizeMode
from vlmkit.text.template import ChatTemplate, ImageTokens, SplitImage, Turn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vlmkit.model import VisionLanguageModel


class VLMProcessor:
    """Turn ``(images, turns)`` into ``input_ids``, ``labels`` and pixel tensors.

    Args:
        tokenizer: Tokenizer with the VLM special tokens.
        image_processor: Resizes, normalises, splits and (in training) upscales images.
        num_image_tokens: ``(height, width) -> placeholders`` for one processed image.
        train_on: ``"assistant"`` for answer-only loss, ``"all"`` for every text token.
        crop_markers: Mark the crops of split images with ``<row_i_col_j>``/``<global-img>``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: ImageProcessor,
        num_image_tokens: Callable[[int, int], int],
        train_on: Literal["assistant", "all"] = "assistant",
        crop_markers: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.template = ChatTemplate(tokenizer, train_on=train_on, crop_markers=crop_markers)

    @classmethod
    def from_model(
        cls,
        model: VisionLanguageModel,
        max_image_size: int = 980,
        min_image_size: int = 378,
        train_on: Literal["assistant", "all"] = "assistant",
        crop_markers: bool = True,
        upscale_probability: float = 0.0,
        max_upscale: float = 2.0,
        resize_mode: ResizeMode = "preserve_aspect",
    ) -> VLMProcessor:
        """The processor matching ``model``'s tokenizer, encoder normalisation and token layout.

        ``resize_mode="square"`` resizes every image to ``max_image_size`` squared (see ``ImageProcessor``).
        """
        encoder = model.vision_encoder
        image_processor = ImageProcessor(
            encoder.patch_size,
            encoder.image_mean,
            encoder.image_std,
            max_image_size,
            min_image_size,
            upscale_probability=upscale_probability,
            max_upscale=max_upscale,
            resize_mode=resize_mode,
        )
        return cls(model.tokenizer, image_processor, model.num_image_tokens, train_on, crop_markers)

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
            split_images: Give every image as 4 crops + the whole image (5x the visual tokens).
            rng: Random source for training augmentation (upscaling); ``None`` for evaluation.

        Returns:
            ``input_ids`` and ``labels`` (``LongTensor [s]``) and ``pixel_values``
            (a list of ``[3, H_i, W_i]`` tensors, in text order, crops before their whole image).
        """
        pixel_values: list[torch.Tensor] = []
        layouts: list[ImageTokens] = []
        for image in images:
            views = self.image_processor.process(image, split=split_images, rng=rng)
            count = self.num_image_tokens(views[-1].shape[1], views[-1].shape[2])
            layouts.append(SplitImage(count) if split_images else count)
            pixel_values.extend(views)
        encoded = self.template.encode(turns, layouts, add_generation_prompt=add_generation_prompt)
        return {
            "input_ids": torch.tensor(encoded.input_ids, dtype=torch.long),
            "labels": torch.tensor(encoded.labels, dtype=torch.long),
            "pixel_values": pixel_values,
        }
