"""Sequence packing: several rendered samples in one row, attention isolated between them.

A packed row carries ``position_ids`` restarting at 0 for every sample and ``segment_ids`` (the
sample's index in the row). The LM keeps samples apart with :func:`~vlmkit.attention.block_diagonal_causal_mask`
(eager, sdpa, flex attention) or, under flash attention, with the varlen lengths of
:func:`~vlmkit.attention.flash_varlen_kwargs`,
so a token sees only earlier tokens of its own sample: the logits of a packed sample equal those of
the sample alone (fully autoregressive fusion; images stay in text order, so placeholders are filled
exactly as unpacked). The first token of every sample is never a target.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from vlmkit.attention import block_diagonal_causal_mask, flash_varlen_kwargs
from vlmkit.data.collate import VLMCollator
from vlmkit.text.template import IGNORE_INDEX

__all__ = ["PackedCollator", "block_diagonal_causal_mask", "flash_varlen_kwargs", "merge", "pack"]

_PASSED = ("input_ids", "labels", "pixel_values")


def pack(samples: Iterable[dict[str, Any]], max_length: int) -> Iterator[dict[str, Any]]:
    """Greedily concatenate consecutive samples into rows of at most ``max_length`` tokens.

    Args:
        samples: Rendered samples (``input_ids``, ``labels``, ``pixel_values``), each ``<= max_length``.
        max_length: Tokens per packed row.

    Yields:
        Packed samples with ``input_ids``, ``labels``, ``pixel_values``, ``position_ids`` and ``segment_ids``.

    Raises:
        ValueError: If a sample is longer than ``max_length``.
    """
    buffer: list[dict[str, Any]] = []
    length = 0
    for sample in samples:
        n = len(sample["input_ids"])
        if n > max_length:
            raise ValueError(f"a sample of {n} tokens exceeds the packing length {max_length}")
        if buffer and length + n > max_length:
            yield merge(buffer)
            buffer, length = [], 0
        buffer.append(sample)
        length += n
    if buffer:
        yield merge(buffer)


def merge(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One packed sample from ``samples`` (see :func:`pack`)."""
    labels = []
    for sample in samples:
        sample_labels = sample["labels"].clone()
        sample_labels[0] = IGNORE_INDEX  # never predicted from the previous sample's last token
        labels.append(sample_labels)
    lengths = [len(s["input_ids"]) for s in samples]
    return {
        "input_ids": torch.cat([s["input_ids"] for s in samples]),
        "labels": torch.cat(labels),
        "pixel_values": [image for s in samples for image in s["pixel_values"]],
        "position_ids": torch.cat([torch.arange(n) for n in lengths]),
        "segment_ids": torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(lengths)]),
    }


class PackedCollator:
    """Collate rendered (optionally packed) samples; right padding.

    Args:
        pad_token_id: Id used to pad ``input_ids``.
        patch_size: The vision encoder's patch size.

    Returns batches with ``input_ids``, ``attention_mask``, ``labels`` ``[b, s]``, ``pixel_values``/``patch_mask``
    when there are images, and for packed samples ``position_ids`` and ``segment_ids`` ``[b, s]`` (padding:
    positions continue, segment ``-1``). Other keys are dropped.
    """

    def __init__(self, pad_token_id: int, patch_size: int) -> None:
        self.collate = VLMCollator(pad_token_id, patch_size)

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Pad and stack ``samples``."""
        batch = self.collate([{k: s[k] for k in _PASSED} for s in samples])
        if "segment_ids" in samples[0]:
            length = batch["input_ids"].shape[1]
            batch["position_ids"] = torch.arange(length).repeat(len(samples), 1)
            batch["segment_ids"] = torch.full((len(samples), length), -1, dtype=torch.long)
            for i, sample in enumerate(samples):
                n = len(sample["segment_ids"])
                batch["position_ids"][i, :n] = sample["position_ids"]
                batch["segment_ids"][i, :n] = sample["segment_ids"]
        return batch
