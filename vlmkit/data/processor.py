"""``VLMProcessor``: a conversation with images -> model inputs of one sample.

It joins the image processor and the chat template, and asks the model how many
placeholders each image needs, so data and model can never disagree on layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from vlmkit.data.image_processing import ImageInput, ImageProcessor
from vlmkit.text.template import ChatTemplate, Turn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vlmkit.model import VisionLanguageModel


class VLMProcessor:
    """Turn ``(images, turns)`` into ``input_ids``, ``labels`` and pixel tensors.

    Args:
        tokenizer: Tokenizer with the VLM special tokens.
        image_processor: Resizes and normalises images.
        num_image_tokens: ``(height, width) -> placeholders`` for one processed image.
        train_on: ``"assistant"`` for answer-only loss, ``"all"`` for every text token.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: ImageProcessor,
        num_image_tokens: Callable[[int, int], int],
        train_on: Literal["assistant", "all"] = "assistant",
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.template = ChatTemplate(tokenizer, train_on=train_on)

    @classmethod
    def from_model(
        cls,
        model: VisionLanguageModel,
        max_image_size: int = 980,
        min_image_size: int = 378,
        train_on: Literal["assistant", "all"] = "assistant",
    ) -> VLMProcessor:
        """The processor matching ``model``'s tokenizer, encoder normalisation and token layout."""
        encoder = model.vision_encoder
        image_processor = ImageProcessor(
            encoder.patch_size, encoder.image_mean, encoder.image_std, max_image_size, min_image_size
        )
        return cls(model.tokenizer, image_processor, model.num_image_tokens, train_on)

    def __call__(
        self, images: Sequence[ImageInput], turns: Sequence[Turn], add_generation_prompt: bool = False
    ) -> dict[str, Any]:
        """Process one sample.

        Args:
            images: PIL images or image file paths, in the order of the image segments.
            turns: The conversation.
            add_generation_prompt: End with ``Assistant:`` for generation.

        Returns:
            ``input_ids`` and ``labels`` (``LongTensor [s]``) and ``pixel_values``
            (a list of ``[3, H_i, W_i]`` tensors, in text order).
        """
        pixel_values = [self.image_processor(image) for image in images]
        counts = [self.num_image_tokens(p.shape[1], p.shape[2]) for p in pixel_values]
        encoded = self.template.encode(turns, counts, add_generation_prompt=add_generation_prompt)
        return {
            "input_ids": torch.tensor(encoded.input_ids, dtype=torch.long),
            "labels": torch.tensor(encoded.labels, dtype=torch.long),
            "pixel_values": pixel_values,
        }
