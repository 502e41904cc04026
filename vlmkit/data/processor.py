"""``VLMProcessor``: a conversation with images -> model inputs of one sample, the one rendering path of vlmkit.

Every source renders through :meth:`VLMProcessor.render`: the synthetic questions, shard and synthetic mixtures
(:class:`~vlmkit.data.render.SampleRenderer`), evaluation prompts and the lmms-eval adapter. It joins the image
processor and the chat template, and asks the model how many placeholders each image needs, so data and model can
never disagree on layout. Token counts come from the image headers: images are decoded only once truncation has
decided to keep them, at the reduced size the processor needs. Image splitting is decided per call, so the same
weights serve 64 or 5 x 64 visual tokens per image (paper section 3.4, Finding 6; with tiling, Idefics3's grid).
Random draws: one upscaling draw per image (:meth:`ImageProcessor.draw_scale`), nothing else.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from vlmkit.data.formats import BadSample
from vlmkit.data.image_decode import EncodedImage, decode_image, image_size
from vlmkit.data.image_processing import ImageInput, ImageProcessor, ImageViews, ResizeMode, encoded
from vlmkit.data.truncation import Truncation, truncate
from vlmkit.text.template import IGNORE_INDEX, ChatTemplate, ImageTokens, SplitImageTokens, Turn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vlmkit.model import VisionLanguageModel
    from vlmkit.text.checkpoint_template import ProcessorRules

TrainOn = Literal["assistant", "all"]
"""Which text tokens get labels: the assistant's answers only, or every text token."""


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
        train_on: TrainOn = "assistant",
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
        train_on: TrainOn = "assistant",
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
            tile_size = model.tile_size
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
        chat_template = model.chat_template
        if crop_markers is None:
            crop_markers = chat_template is None or tile_size is not None
        rules = "idefics3" if tile_size is not None else "idefics2"
        return cls(
            model.tokenizer, image_processor, model.num_image_tokens, train_on, crop_markers, chat_template, rules
        )

    def with_train_on(self, train_on: TrainOn) -> VLMProcessor:
        """The same processor with labels on ``train_on`` tokens."""
        template = self.template
        return VLMProcessor(
            self.tokenizer, self.image_processor, self.num_image_tokens, train_on, template.crop_markers,
            template.chat_template, template.processor_rules,
        )  # fmt: skip

    def __call__(
        self,
        images: Sequence[ImageInput],
        turns: Sequence[Turn],
        add_generation_prompt: bool = False,
        split_images: bool = False,
        rng: random.Random | None = None,
    ) -> dict[str, Any]:
        """Process one sample (:meth:`render` without a token budget).

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

        Raises:
            FileNotFoundError: For an image file that does not exist (named).
            ValueError: For an image that does not decode (named) or a conversation the template rejects.
        """
        try:
            rendered = self.render(
                images, turns, add_generation_prompt=add_generation_prompt, split_images=split_images, rng=rng
            )
        except BadSample as bad:  # its message names the image, or the template's reason
            if bad.reason == "missing_image":
                raise FileNotFoundError(bad.detail) from bad
            raise ValueError(bad.detail) from bad
        del rendered["dropped_images"]
        return rendered

    def render(
        self,
        images: Sequence[ImageInput],
        turns: Sequence[Turn],
        *,
        rng: random.Random | None = None,
        split_images: bool = False,
        add_generation_prompt: bool = False,
        max_length: int | None = None,
        truncation: Truncation = "drop_images",
        max_image_pixels: int | None = None,
        where: str = "sample",
    ) -> dict[str, Any]:
        """Render a conversation within an optional token budget.

        Args:
            images: The images, in the order of the image segments (PIL images, encoded images, file paths).
            turns: The conversation.
            rng: Random source for training augmentation (upscaling); ``None`` for evaluation.
            split_images: Give every image as its crops + the whole image (4 + 1 views, or with a tiling image
                processor the tile grid + 1).
            add_generation_prompt: End with ``Assistant:`` for generation.
            max_length: Token budget; ``None``: none. A too-long sample is cut before the first image block that
                does not fit (:func:`~vlmkit.data.truncation.truncate`), and must keep a label to train on.
            truncation: ``drop_images`` (cut, dropping images) or ``drop_sample`` (raise ``too_long``).
            max_image_pixels: Refuse an image that decodes to more pixels (``too_many_pixels``).
            where: Names the sample in messages (``sample 'key'``).

        Returns:
            ``input_ids``, ``labels`` (``LongTensor [s]``), ``pixel_values`` (list of ``[3, H, W]``, in text order;
            a split image gives its crops then itself) and ``dropped_images`` (images removed by truncation).

        Raises:
            BadSample: ``missing_image``, ``corrupt_image`` (an image that does not open, decode or orient),
                ``too_many_pixels``, ``render_error`` (the template rejects the conversation) or ``too_long``.
        """
        processor = self.image_processor
        images, names = list(images), [f"{where} image {i}" for i in range(len(images))]
        plans: list[ImageViews] = []
        for i, image in enumerate(images):  # sizes from the headers: nothing is decoded before truncation
            try:
                images[i] = image = encoded(image)  # a file path: read, not decoded
            except FileNotFoundError as err:
                raise BadSample("missing_image", str(err)) from err
            except ValueError as err:  # names the file
                raise BadSample("corrupt_image", str(err)) from err
            names[i] = image.where if isinstance(image, EncodedImage) else names[i]
            try:
                size = image_size(image)
            except Exception as err:  # EXIF data Pillow cannot parse
                raise BadSample("corrupt_image", f"cannot read image {names[i]}: {type(err).__name__}: {err}") from err
            plans.append(processor.plan(*size, split_images, processor.draw_scale(rng)))
        try:  # every view of an image has one size: one count serves every view
            layouts = [image_layout(plan, self.num_image_tokens(plan.height, plan.width)) for plan in plans]
            encoded_text = self.template.encode(turns, layouts, add_generation_prompt=add_generation_prompt)
        except ValueError as err:
            raise BadSample("render_error", f"{where}: {err}") from err
        ids, labels = encoded_text.input_ids, encoded_text.labels
        kept = len(plans)
        if max_length is not None:
            cut, kept = truncate(ids, labels, max_length, self.template.image_token_id, encoded_text.image_spans)
            if kept < len(plans) and truncation == "drop_sample":
                raise BadSample("too_long", f"{where}: {len(ids)} tokens > {max_length} through an image")
            ids, labels = ids[:cut], labels[:cut]
            if all(label == IGNORE_INDEX for label in labels[1:]):
                raise BadSample("too_long", f"{where}: nothing to train on within {max_length} tokens")
        pixel_values = []
        for image, name, plan in zip(images[:kept], names, plans):
            try:
                decoded = decode_image(image, processor.decode_size(plan), max_image_pixels, name)
            except BadSample as bad:
                raise BadSample(bad.reason, f"cannot read image {bad.detail}") from bad
            pixel_values += processor.views(decoded, plan)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": pixel_values,
            "dropped_images": len(plans) - kept,
        }


def image_layout(views: ImageViews, tokens_per_view: int) -> ImageTokens:
    """The text layout of one image: its placeholder count, or its split layout (crops then the whole image)."""
    return SplitImageTokens(tokens_per_view, views.rows, views.cols) if views.rows else tokens_per_view
