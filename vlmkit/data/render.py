"""Render a :class:`~vlmkit.data.formats.Record` of any source to token ids, labels and images, within a budget.

A record becomes a conversation (:func:`~vlmkit.data.formats.to_turns`), which the one rendering path renders
(:meth:`VLMProcessor.render <vlmkit.data.processor.VLMProcessor.render>`): every source -- shards, synthetic mixtures,
the synthetic questions of ``SyntheticVQADataModule`` -- makes the same random draws in the same order for the same
sample: the turn order of a multi-turn conversation, then whether its images are split, then one upscaling draw per
image. Pretraining formats are trained on every text token; conversations on the assistant answers only (the chat
template's own spans). Training samples can be given with their images split into 4 crops + the whole image (paper
section 3.4, Finding 6; half of the instruction samples in section 4.2). Too-long samples are truncated without
cutting through an image's block (:mod:`vlmkit.data.truncation`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vlmkit.checks import check_fraction
from vlmkit.data.formats import BadSample, CaptionField, Record, to_turns
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.processor import VLMProcessor
from vlmkit.data.truncation import Truncation, image_runs, truncate, unsplit_image_spans

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vlmkit.text.checkpoint_template import ProcessorRules

__all__ = ["SampleRenderer", "Truncation", "draw_image_splitting", "image_runs", "truncate", "unsplit_image_spans"]


def draw_image_splitting(image_splitting: float, rng: random.Random) -> bool:
    """Whether a training sample's images are split, with probability ``image_splitting``.

    No draw at 0 or 1, so the stream's other random choices do not move when splitting is switched off (or on for
    every sample).
    """
    if image_splitting in (0.0, 1.0):
        return image_splitting == 1.0
    return rng.random() < image_splitting


class SampleRenderer:
    """Turn records of one source into ``input_ids``/``labels``/``pixel_values`` of at most ``max_length``.

    Args:
        tokenizer: Tokenizer with the VLM special tokens.
        image_processor: This source's image processing (its own max image size).
        num_image_tokens: ``(height, width) -> placeholders`` of one processed image (the model's).
        max_length: Token budget per sample; ``None``: no budget (the synthetic questions).
        caption_field: For pairs, which caption to train on.
        shuffle_turns: Shuffle the turns of multi-turn conversations (needs an ``rng`` at call time).
        truncation: What to do with a too-long sample (see :data:`Truncation`).
        image_splitting: Chance that a training sample (rendered with an ``rng``) has every image split into
            4 crops + the whole image (Idefics2 instruction tuning: 0.5); ``0``: never, ``1``: always.
        eval_image_splitting: Split every image of evaluation samples (rendered without an ``rng``), as
            ``SyntheticVQADataModule(eval_image_splitting=...)``; ``image_splitting`` does not apply to them.
        crop_markers: Mark the crops of split images with ``<row_i_col_j>``/``<global-img>`` (Idefics3's
            layout); ``False``: Idefics2's layout (five plain image blocks in a row).
        chat_template: A checkpoint's Jinja chat template (an imported model's): its text, token for token as
            transformers' processor renders it; ``None``: vlmkit's layout.
        processor_rules: Whose processor's string rules expand the template's images (``"idefics2"``, or
            ``"idefics3"`` for Idefics3/SmolVLM; see :class:`~vlmkit.text.ChatTemplate`).
        max_image_pixels: Skip a sample with an image that decodes to more pixels (``too_many_pixels``; a JPEG
            counts at the reduced size it decodes at); ``None``: no limit.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: ImageProcessor,
        num_image_tokens: Callable[[int, int], int],
        max_length: int | None,
        caption_field: CaptionField = "caption",
        shuffle_turns: bool = True,
        truncation: Truncation = "drop_images",
        image_splitting: float = 0.0,
        eval_image_splitting: bool = False,
        crop_markers: bool = True,
        chat_template: str | None = None,
        max_image_pixels: int | None = None,
        processor_rules: ProcessorRules = "idefics2",
    ) -> None:
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        if truncation not in ("drop_images", "drop_sample"):
            raise ValueError(f"truncation must be 'drop_images' or 'drop_sample', got {truncation!r}")
        check_fraction("image_splitting", image_splitting)
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.caption_field = caption_field
        self.shuffle_turns = shuffle_turns
        self.truncation = truncation
        self.image_splitting = image_splitting
        self.eval_image_splitting = eval_image_splitting
        self.max_image_pixels = max_image_pixels
        processor = VLMProcessor(
            tokenizer, image_processor, num_image_tokens, "assistant", crop_markers, chat_template, processor_rules
        )
        self.processors = {True: processor, False: processor.with_train_on("all")}  # by "answer only"
        self.image_token_id = processor.template.image_token_id

    @classmethod
    def for_processor(cls, processor: VLMProcessor, max_length: int | None = None, **kwargs: Any) -> SampleRenderer:
        """A renderer with ``processor``'s tokenizer, image processing, placeholders and text layout."""
        template = processor.template
        return cls(
            processor.tokenizer,
            processor.image_processor,
            processor.num_image_tokens,
            max_length,
            crop_markers=template.crop_markers,
            chat_template=template.chat_template,
            processor_rules=template.processor_rules,
            **kwargs,
        )

    def splits_images(self, rng: random.Random | None) -> bool:
        """Whether the next sample's images are split.

        In training (an ``rng``) it is drawn with probability ``image_splitting`` (:func:`draw_image_splitting`); in
        evaluation (no ``rng``) it is ``eval_image_splitting``.
        """
        if rng is None:
            return self.eval_image_splitting
        return draw_image_splitting(self.image_splitting, rng)

    def __call__(
        self, record: Record, rng: random.Random | None = None, add_generation_prompt: bool = False
    ) -> dict[str, Any]:
        """Render ``record``.

        Args:
            record: A decoded sample.
            rng: Training randomness (turn shuffling, image splitting, image upscaling); ``None`` for evaluation.
            add_generation_prompt: A prompt for generation: the conversation without its last answer, ending with
                ``Assistant:``.

        Returns:
            ``input_ids``, ``labels`` (``LongTensor [s]``, ``s <= max_length``), ``pixel_values`` (list of
            ``[3, H, W]``, in text order; a split image gives its 4 crops then itself) and ``dropped_images``
            (images removed by truncation; a split image counts once).

        Raises:
            BadSample: ``too_long`` (truncation would leave nothing to train on, or ``drop_sample``),
                ``render_error`` (the template rejects the sample), ``missing_field``, ``corrupt_image`` (an image
                that does not decode or orient) or ``too_many_pixels``.
        """
        turns, answer_only = to_turns(record, self.caption_field, rng if self.shuffle_turns else None)
        if add_generation_prompt:
            if not turns or turns[-1].role != "assistant":
                raise BadSample("render_error", f"sample {record.key!r} has no answer to leave out of a prompt")
            turns = turns[:-1]
        return self.processors[answer_only].render(
            record.images,
            turns,
            add_generation_prompt=add_generation_prompt,
            split_images=self.splits_images(rng),
            rng=rng,
            max_length=self.max_length,
            truncation=self.truncation,
            max_image_pixels=self.max_image_pixels,
            where=f"sample {record.key!r}",
        )
