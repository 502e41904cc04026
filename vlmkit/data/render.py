"""Render a :class:`~vlmkit.data.formats.Record` to token ids, labels and images, within a length budget.

Pretraining formats are trained on every text token; conversations on the assistant answers only
(the chat template's own spans). Truncation never cuts through an image's placeholder block: the cut
moves to before the block, and that image and every later one are dropped with their pixels (or the
whole sample is dropped, by choice), so placeholders and images always agree.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch

from vlmkit.data.formats import BadSample, CaptionField, Record, to_turns
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.text.template import IGNORE_INDEX, ChatTemplate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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


def truncate(ids: list[int], labels: list[int], max_length: int, image_token_id: int) -> tuple[int, int]:
    """Where to cut ``ids`` to at most ``max_length`` tokens without splitting an image block.

    An image block is ``<fake> <image>*n <fake>`` (a fake token may be shared with the next image).
    The cut lands at or before ``max_length``; an image is kept only when its closing fake token is kept.

    Returns:
        ``(cut, kept_images)``: keep ``ids[:cut]`` and the first ``kept_images`` images.
    """
    runs = image_runs(ids, image_token_id)
    if len(ids) <= max_length:
        return len(ids), len(runs)
    cut = max_length
    for kept, (start, end) in enumerate(runs):
        if end + 1 <= cut:  # the run and its closing fake token fit
            continue
        if start < cut or start - 1 < cut:  # the cut would fall inside this block: move it before the block
            shared = kept > 0 and runs[kept - 1][1] == start - 1  # opening fake = previous image's closing one
            cut = start if shared else start - 1
        return cut, kept
    return cut, len(runs)


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
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        if truncation not in ("drop_images", "drop_sample"):
            raise ValueError(f"truncation must be 'drop_images' or 'drop_sample', got {truncation!r}")
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.caption_field = caption_field
        self.shuffle_turns = shuffle_turns
        self.truncation = truncation
        self.templates = {
            True: ChatTemplate(tokenizer, train_on="assistant"),
            False: ChatTemplate(tokenizer, train_on="all"),
        }
        self.image_token_id = self.templates[True].image_token_id

    def __call__(self, record: Record, rng: random.Random | None = None) -> dict[str, Any]:
        """Render ``record``.

        Args:
            record: A decoded sample.
            rng: Training randomness (turn shuffling, image upscaling); ``None`` for evaluation.

        Returns:
            ``input_ids``, ``labels`` (``LongTensor [s]``, ``s <= max_length``), ``pixel_values``
            (list of ``[3, H, W]``) and ``dropped_images`` (images removed by truncation).

        Raises:
            BadSample: ``too_long`` (truncation would leave nothing to train on, or ``drop_sample``),
                ``render_error`` (the template or image processor rejects the sample), ``missing_field``.
        """
        turns, answer_only = to_turns(record, self.caption_field, rng if self.shuffle_turns else None)
        try:
            pixel_values = [self.image_processor.process(image, rng=rng)[0] for image in record.images]
            counts = [self.num_image_tokens(p.shape[1], p.shape[2]) for p in pixel_values]
            encoded = self.templates[answer_only].encode(turns, counts)
        except ValueError as err:
            raise BadSample("render_error", f"sample {record.key!r}: {err}") from err
        ids, labels = encoded.input_ids, encoded.labels
        cut, kept = truncate(ids, labels, self.max_length, self.image_token_id)
        dropped = len(pixel_values) - kept
        if dropped and self.truncation == "drop_sample":
            raise BadSample(
                "too_long", f"sample {record.key!r}: {len(ids)} tokens > {self.max_length} through an image"
            )
        ids, labels = ids[:cut], labels[:cut]
        if all(label == IGNORE_INDEX for label in labels[1:]):
            raise BadSample("too_long", f"sample {record.key!r}: nothing to train on within {self.max_length} tokens")
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": pixel_values[:kept],
            "dropped_images": dropped,
        }
