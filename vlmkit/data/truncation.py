"""Cutting a rendered sample to a token budget without cutting through an image's block.

The cut moves to before the block of the first image that does not fit (for a split image: all five views with
their fake tokens and crop markers), and that image and every later one are dropped with their pixels, so
placeholders and images always agree.
"""

from __future__ import annotations

from typing import Literal

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
