"""Average Normalized Levenshtein Similarity (DocVQA, ST-VQA, InfographicVQA; paper Table 15).

Strings are compared lower-cased with whitespace stripped and collapsed, as the official ST-VQA/DocVQA
evaluation script does; the edit distance is a plain-Python dynamic program (answers are short).
"""

from __future__ import annotations

from collections.abc import Sequence

from torchmetrics import Metric

from vlmkit.eval.metrics._common import add_mean_states, add_scores, mean_score, reference_lists

__all__ = ["ANLS", "anls_score", "levenshtein"]


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each) between two strings."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _normalize(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls_score(prediction: str, references: Sequence[str], threshold: float = 0.5) -> float:
    """ANLS of one answer: the best ``1 - NL`` over the references, zeroed when it falls below ``threshold``.

    ``NL = levenshtein(a, o) / max(len(a), len(o))`` on lower-cased, whitespace-normalised strings
    (Biten et al., 2019, "Scene Text Visual Question Answering", eq. 1; Mathew et al., 2021, "DocVQA").
    The paper writes the cut as ``NL < threshold``; the official evaluation script keeps a similarity
    equal to the threshold (at 0.5: an answer with ``NL == 0.5`` scores 0.5), and so does this function.
    Two empty strings are identical (score 1).

    Args:
        prediction: The generated answer.
        references: The accepted answers.
        threshold: Similarities below it score 0 (0.5 in DocVQA and ST-VQA).

    Returns:
        The score in ``[0, 1]``.

    Raises:
        ValueError: If there are no references.
    """
    if not references:
        raise ValueError("anls_score needs at least one reference")
    answer = _normalize(prediction)
    best = 0.0
    for reference in map(_normalize, references):
        length = max(len(answer), len(reference))
        best = max(best, 1.0 - levenshtein(answer, reference) / length if length else 1.0)
    return best if best >= threshold else 0.0


class ANLS(Metric):
    """Mean ANLS over questions (Biten et al., 2019; the DocVQA metric).

    Args:
        threshold: Per-question similarities below it count as 0.
        **kwargs: Passed to ``torchmetrics.Metric``.

    Example:
        >>> metric = ANLS()
        >>> metric.update(["Invoice "], [["invoice", "the invoice"]])
        >>> float(metric.compute())
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        add_mean_states(self)

    def update(self, predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> None:
        """Score a batch.

        Args:
            predictions: One generated answer per question.
            references: The accepted answers of each question.
        """
        refs = reference_lists(predictions, references)
        add_scores(self, [anls_score(pred, ref, self.threshold) for pred, ref in zip(predictions, refs)])

    compute = mean_score
