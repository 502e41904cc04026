"""Exact-match accuracy: an answer is right when it equals any reference after a chosen normalisation.

The normalisation is a closed set of names (``none``, ``lower``, ``vqa``) rather than a callable so that
configs stay plain YAML; ``vqa`` reuses the official VQA normalisation of :mod:`vlmkit.eval.metrics.vqa`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from torchmetrics import Metric

from vlmkit.eval.metrics._common import add_mean_states, add_scores, mean_score, reference_lists
from vlmkit.eval.metrics.vqa import normalize_vqa_answer

__all__ = ["ExactMatch"]

Normalization = Literal["none", "vqa", "lower"]
_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "lower": lambda text: " ".join(text.lower().split()),
    "vqa": normalize_vqa_answer,
}


class ExactMatch(Metric):
    """Fraction of predictions equal to at least one of their references.

    Args:
        normalize: Applied to predictions and references before comparing: ``none`` (as is),
            ``lower`` (lower-cased, whitespace stripped and collapsed) or ``vqa``
            (:func:`~vlmkit.eval.metrics.vqa.normalize_vqa_answer`, Antol et al., 2015).
        **kwargs: Passed to ``torchmetrics.Metric``.

    Example:
        >>> metric = ExactMatch()
        >>> metric.update(["Red ", "blue"], [["red"], ["green", "teal"]])
        >>> float(metric.compute())
        0.5
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, normalize: Normalization = "lower", **kwargs) -> None:
        super().__init__(**kwargs)
        if normalize not in _NORMALIZERS:
            raise ValueError(f"normalize must be one of {sorted(_NORMALIZERS)}, got {normalize!r}")
        self.normalize = normalize
        add_mean_states(self)

    def update(self, predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> None:
        """Score a batch.

        Args:
            predictions: One generated answer per sample.
            references: The accepted answers of each sample (any one matching counts).
        """
        norm = _NORMALIZERS[self.normalize]
        refs = reference_lists(predictions, references)
        add_scores(
            self, [float(norm(pred) in {norm(ref) for ref in ref_list}) for pred, ref_list in zip(predictions, refs)]
        )

    compute = mean_score
