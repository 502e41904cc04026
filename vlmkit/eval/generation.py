"""Turning generated ids into answers, with the paper's stop words (appendix A.3.1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
