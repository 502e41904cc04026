"""Render a :class:`~vlmkit.data.formats.Record` to token ids, labels and images, within a length budget.

Pretraining formats are trained on every text token; conversations on the assistant answers only
(the chat template's own spans). Training samples can be given with their images split into 4 crops + the
whole image (paper section 3.4, Finding 6; half of the instruction samples in section 4.2). Truncation never
cuts through an image's block (for a split image: all five views with their fake tokens and crop markers): the
cut moves to before the block, and that image and every later one are dropped with their pixels (or the whole
sample is dropped, by choice), so placeholders and images always agree. Token counts come from the image headers:
images are decoded only once truncation has decided to keep them, at the reduced size the processor needs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch

from vlmkit.data.formats import BadSample, CaptionField, Record, to_turns
from vlmkit.data.image_decode import decode_image, image_size
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.processor import image_layout
from vlmkit.text.template import IGNORE_INDEX, ChatTemplate, ImageTokens

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vlmkit.text.checkpoint_template import ProcessorRules

Truncation = Literal["drop_images", "drop_sample"]
"""Too-long samples: cut before the first image block that does not fit (dropping it and later images),
or skip the sample."""


def image_runs(ids: list[int], image_token_id: int) -> list[tuple[int, int]]:
    """``(start, end)`` (end exclusive) of each contiguous run of image placeholders, in order."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, token in enumerate([*ids, None]):
        if token == image_token_id and start is None:
            start = i
        elif token != image_token_id and start is not None:
            runs.append((start, i))
            start = None
    return runs


def unsplit_image_spans(ids: list[int], image_token_id: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each unsplit image's block ``<fake> <image>*n <fake>``, found from its placeholders.

    An opening fake token shared with the previous image belongs to the previous block (as in
    :attr:`~vlmkit.text.template.Encoded.image_spans`, which also covers split images).
    """
    spans: list[tuple[int, int]] = []
    for start, end in image_runs(ids, image_token_id):
        shared = bool(spans) and spans[-1][1] == start  # the previous block ends with this image's opening fake
        spans.append((start if shared else start - 1, end + 1))
    return spans


def truncate(
    ids: list[int],
    labels: list[int],
    max_length: int,
    image_token_id: int,
    spans: list[tuple[int, int]] | None = None,
) -> tuple[int, int]:
    """Where to cut ``ids`` to at most ``max_length`` tokens without cutting through an image's block.

    The cut lands at or before ``max_length``; an image is kept only when its whole block is kept. A cut
    inside a block moves to the block's start, so a split image keeps all its views or none, and no
    partial crop marker or dangling fake token is left.

    Args:
        ids: Token ids.
        labels: Their labels (same length).
        max_length: Token budget.
        image_token_id: The placeholder id.
        spans: Each image's block (``Encoded.image_spans``); default: found from the placeholders,
            which is right for unsplit images only.

    Returns:
        ``(cut, kept_images)``: keep ``ids[:cut]`` and the first ``kept_images`` images.
    """
    if spans is None:
        spans = unsplit_image_spans(ids, image_token_id)
    if len(ids) <= max_length:
        return len(ids), len(spans)
    for kept, (start, end) in enumerate(spans):
        if end > max_length:  # this block does not fit: cut before it (or earlier) and drop it and later ones
            return min(max_length, start), kept
    return max_length, len(spans)


class SampleRenderer:
    """Turn records of one source into ``input_ids``/``labels``/``pixel_values`` of at most ``max_length``.

    Args:
        tokenizer: Tokenizer with the VLM special tokens.
        image_processor: This source's image processing (its own max image size).
        num_image_tokens: ``(height, width) -> placeholders`` of one processed image (the model's).
        max_length: Token budget per sample.
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
        max_length: int,
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
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        if truncation not in ("drop_images", "drop_sample"):
            raise ValueError(f"truncation must be 'drop_images' or 'drop_sample', got {truncation!r}")
        if not 0.0 <= image_splitting <= 1.0:
            raise ValueError(f"image_splitting must be in [0, 1], got {image_splitting}")
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.caption_field = caption_field
        self.shuffle_turns = shuffle_turns
        self.truncation = truncation
        self.image_splitting = image_splitting
        self.eval_image_splitting = eval_image_splitting
        self.max_image_pixels = max_image_pixels
        self.templates = {
            answer_only: ChatTemplate(
                tokenizer,
                train_on="assistant" if answer_only else "all",
                crop_markers=crop_markers,
                chat_template=chat_template,
                processor_rules=processor_rules,
            )
            for answer_only in (True, False)
        }
        self.image_token_id = self.templates[True].image_token_id

    def split(self, rng: random.Random | None) -> bool:
        """Whether the next sample's images are split.

        In training (an ``rng``) it is drawn with probability ``image_splitting`` (no draw at 0 or 1, so the
        stream's other random choices do not move); in evaluation (no ``rng``) it is ``eval_image_splitting``.
        """
        if rng is None:
            return self.eval_image_splitting
        if self.image_splitting in (0.0, 1.0):
            return self.image_splitting == 1.0
        return rng.random() < self.image_splitting

    def __call__(self, record: Record, rng: random.Random | None = None) -> dict[str, Any]:
        """Render ``record``.

        Args:
            record: A decoded sample.
            rng: Training randomness (turn shuffling, image splitting, image upscaling); ``None`` for evaluation.

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
        split = self.split(rng)
        processor = self.image_processor
        try:  # sizes from the headers: nothing is decoded before truncation has chosen the images to keep
            plans = [processor.plan(*image_size(image), split, processor.draw_scale(rng)) for image in record.images]
        except Exception as err:  # EXIF data Pillow cannot parse
            raise BadSample("corrupt_image", f"sample {record.key!r}: {type(err).__name__}: {err}") from err
        try:  # every view of an image has one size: one count serves every view
            layouts: list[ImageTokens] = [
                image_layout(plan, self.num_image_tokens(plan.height, plan.width)) for plan in plans
            ]
            encoded = self.templates[answer_only].encode(turns, layouts)
        except ValueError as err:
            raise BadSample("render_error", f"sample {record.key!r}: {err}") from err
        ids, labels = encoded.input_ids, encoded.labels
        cut, kept = truncate(ids, labels, self.max_length, self.image_token_id, encoded.image_spans)
        dropped = len(plans) - kept
        if dropped and self.truncation == "drop_sample":
            raise BadSample(
                "too_long", f"sample {record.key!r}: {len(ids)} tokens > {self.max_length} through an image"
            )
        ids, labels = ids[:cut], labels[:cut]
        if all(label == IGNORE_INDEX for label in labels[1:]):
            raise BadSample("too_long", f"sample {record.key!r}: nothing to train on within {self.max_length} tokens")
        pixel_values = []
        for i, (image, plan) in enumerate(zip(record.images[:kept], plans)):
            where = f"sample {record.key!r} image {i}"
            decoded = decode_image(image, processor.decode_size(plan), self.max_image_pixels, where)
            pixel_values += processor.views(decoded, plan)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": pixel_values,
            "dropped_images": dropped,
        }
