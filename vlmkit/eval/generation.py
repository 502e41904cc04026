"""Answers by generation, cut at the paper's stop words (appendix A.3.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vlmkit.model import VisionLanguageModel

PAPER_STOP_STRINGS = ("Question", "User")
"""Text stop words of the paper's evaluation; ``<end_of_utterance>`` and EOS stop as tokens."""


def decode(generated: torch.Tensor, tokenizer, stop_strings: Sequence[str] = PAPER_STOP_STRINGS) -> list[str]:
    """Decode ``[b, n]`` generated ids to answers, cut before the first stop string and stripped."""
    texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
    answers = []
    for text in texts:
        cut = min((text.find(stop) for stop in stop_strings if stop in text), default=len(text))
        answers.append(text[:cut].strip())
    return answers


def answer(
    vlm: VisionLanguageModel,
    batch: dict[str, Any],
    max_new_tokens: int,
    stop_strings: Sequence[str] = PAPER_STOP_STRINGS,
) -> list[str]:
    """Greedy answers to a batch of left-padded prompts (``input_ids``, ``attention_mask``, images), one per row."""
    generated = vlm.generate(
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("pixel_values"),
        batch.get("patch_mask"),
        max_new_tokens=max_new_tokens,
        stop_strings=stop_strings,
    )
    return decode(generated, vlm.tokenizer, stop_strings)
