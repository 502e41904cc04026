"""Helpers shared by the metrics: argument checks, means over samples, and strings carried in tensor states.

Most metrics are a mean of a per-sample score: :func:`add_mean_states`, :func:`add_scores` and :func:`mean_score`
(their ``compute``) give them one pair of states synced as sums, so the value over N ranks is that of one process.

Corpus-level metrics (CIDEr-D) must see every rank's text, so strings travel as UTF-8 bytes in list states
reduced with ``cat``. The bytes are stored in the metric's float dtype, not ``uint8``: torchmetrics pads an
empty rank's list state with an empty tensor of that dtype, and ``all_gather`` needs one dtype on all ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

_FIELD_END = b"\xfe"  # bytes 0xFE and 0xFF never occur in UTF-8
_RECORD_END = b"\xff"


def reference_lists(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Check a batch and return its references as one list of strings per prediction.

    Args:
        predictions: One generated answer per sample.
        references: Per sample, a list of reference answers, or a single reference string.

    Returns:
        The references, one non-empty list per sample.

    Raises:
        ValueError: If the batch sizes differ or a sample has no reference.
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError("predictions and references must be sequences with one entry per sample, not strings")
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    lists = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
    if any(not refs for refs in lists):
        raise ValueError("every sample needs at least one reference")
    return lists


def add_mean_states(metric: Metric) -> None:
    """Give ``metric`` the states of a mean over samples: the summed score (float64) and the count, both summed."""
    metric.add_state("score", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
    metric.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")


def add_scores(metric: Metric, scores: Sequence[float]) -> None:
    """Add one score per sample to a metric with :func:`add_mean_states`."""
    metric.score += float(sum(scores))
    metric.total += len(scores)


def mean_score(metric: Metric) -> Tensor:
    """The mean score over every sample of every rank (0 before any update): the ``compute`` of such metrics."""
    return metric.score / metric.total.clamp(min=1)


def encode_records(records: Sequence[Sequence[str]], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Pack records of strings into one 1-D tensor of byte values (a list-state entry).

    Args:
        records: Records, each a sequence of strings (e.g. a candidate and its references).
        dtype: Dtype of the tensor; a float dtype holds the byte values 0-255 exactly.
        device: Device of the tensor.

    Returns:
        The byte values, shape ``[num_bytes]``.
    """
    data = b"".join(_FIELD_END.join(field.encode() for field in record) + _RECORD_END for record in records)
    if not data:
        return torch.empty(0, dtype=dtype, device=device)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device=device, dtype=dtype)


def decode_records(state: Tensor | list[Tensor]) -> list[list[str]]:
    """Unpack what :func:`encode_records` packed, after any concatenation across updates and ranks.

    Args:
        state: The list state (before sync) or the concatenated tensor (after sync).

    Returns:
        The records, in update order (rank by rank after a sync).
    """
    if isinstance(state, list) and not state:
        return []
    data = dim_zero_cat(state).to(torch.uint8).cpu().numpy().tobytes()
    return [[field.decode() for field in record.split(_FIELD_END)] for record in data.split(_RECORD_END)[:-1]]
