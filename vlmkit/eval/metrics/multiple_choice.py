"""Multiple-choice accuracy with letter extraction from free-form answers (MMMU, MathVista, MMBench).

Extraction tries rules from the most to the least explicit (a bare letter; "the answer is C"; a leading
"B)" or any bracketed "(D)"; the exact text of an option; a lone capital letter) and stops at the first
that finds letters; several different letters there make the answer ambiguous (``None``), never a guess.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["MultipleChoiceAccuracy", "extract_choice"]

_BARE = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:]?")
_LEADING = re.compile(r"[(\[]([A-Za-z])[)\]]|([A-Za-z])[).:](?=\s)|([A-Z])(?=\s+[-–:]\s)")
_STATEMENT = re.compile(
    r"\b(?:answer|option|choice)(?:\s+(?:is|would\s+be|should\s+be|will\s+be))?\s*:?\s*(?:(?:option|choice)\s+)?"
    r"(?:[(\[]([A-Za-z])[)\]]|([A-Za-z])(?![\w'’]))",
    re.IGNORECASE,
)
_BRACKETED = re.compile(r"[(\[]([A-Za-z])[)\]]")
_CAPITAL = re.compile(r"(?<![\w'’])([A-Z])(?![\w'’])")
# After these words a capital "A" or "I" is a letter ("A is correct"); before other lower-case words it is
# the article or the pronoun ("A dog", "I think").
_LETTER_CONTEXT = frozenset(
    ["is", "was", "would", "should", "seems", "must", "looks", "appears", "and", "or", "because", "since", "as"]
)
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:correct\s+|right\s+|best\s+)?(?:answer|option|choice)\s*(?:is|:)\s*", re.I)


def _clean(text: str) -> str:
    return " ".join(text.replace("*", " ").split()).strip("\"'`“”‘’ ")


def _option_text(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _capital_letters(text: str) -> list[str]:
    letters = []
    for match in _CAPITAL.finditer(text):
        letter, rest = match.group(1), text[match.end() :]
        following = re.match(r"\s+([a-z]\w*)", rest)
        if letter in "AI" and following and following.group(1) not in _LETTER_CONTEXT:
            continue  # the article "A" or the pronoun "I"
        letters.append(letter)
    return letters


def extract_choice(text: str, num_choices: int, choices: Sequence[str] | None = None) -> str | None:
    """The option letter a free-form answer picks, or ``None`` when it names none or several.

    Handles "B", "(B)", "B.", "b) blue", "Answer: C", "The answer is (B)", "I think it's D because...",
    and, when ``choices`` are given, an answer that restates one option's text ("Blue." for option
    "blue"). Letters beyond ``num_choices`` are ignored. Follows the spirit of the rule-based matching
    of MMMU (Yue et al., 2024, ``parse_multi_choice_response``) and MMBench (Liu et al., 2023), but
    returns ``None`` instead of guessing when an answer is ambiguous.

    Args:
        text: The generated answer.
        num_choices: Number of options; valid letters are the first ``num_choices`` of A-Z.
        choices: The options' texts in letter order, to recognise an answer that restates one.

    Returns:
        The upper-case letter, or ``None``.

    Raises:
        ValueError: If ``num_choices`` is not in ``[1, 26]``.

    Example:
        >>> extract_choice("The answer is (b), the red one.", num_choices=4)
        'B'
    """
    if not 1 <= num_choices <= 26:
        raise ValueError(f"num_choices must be in [1, 26], got {num_choices}")
    valid = string.ascii_uppercase[:num_choices]
    cleaned = _clean(text)

    def pick(letters: Sequence[str | None]) -> str | None | bool:
        found = {letter.upper() for letter in letters if letter and letter.upper() in valid}
        return found.pop() if len(found) == 1 else (None if found else False)  # False: rule found nothing

    bare = _BARE.fullmatch(cleaned)
    leading = _LEADING.match(cleaned)
    statements = []
    for match in _STATEMENT.finditer(cleaned):
        bracketed, plain = match.groups()
        # An unbracketed lower-case letter followed by a word is the article: "the answer is a dog".
        if bracketed or plain.isupper() or not re.match(r"\s+\w", cleaned[match.end() :]):
            statements.append(bracketed or plain)
    rules = [
        [bare.group(1)] if bare else [],
        statements,
        ([next(g for g in leading.groups() if g)] if leading else []) + _BRACKETED.findall(cleaned),
    ]
    for letters in rules:
        if (result := pick(letters)) is not False:
            return result
    if choices:
        stated = {_option_text(cleaned), _option_text(_ANSWER_PREFIX.sub("", cleaned))}
        matching = [letter for letter, option in zip(valid, choices) if _option_text(option) in stated]
        if (result := pick(matching)) is not False:
            return result
    result = pick(_capital_letters(cleaned))
    return result if result is not False else None


def _reference_letter(reference: str) -> str:
    letter = reference.strip().strip("().").upper()
    if len(letter) != 1 or letter not in string.ascii_uppercase:
        raise ValueError(f"multiple-choice references must be option letters, got {reference!r}")
    return letter


class MultipleChoiceAccuracy(Metric):
    """Fraction of answers whose extracted letter (:func:`extract_choice`) is the reference letter.

    An answer from which no single letter can be extracted counts as wrong.

    Args:
        num_choices: Number of options when ``update`` gets no ``choices`` (26: any letter counts).
        **kwargs: Passed to ``torchmetrics.Metric``.

    Example:
        >>> metric = MultipleChoiceAccuracy()
        >>> metric.update(["Answer: B", "(a) cat"], ["B", "C"], choices=[["x", "y"], ["cat", "dog", "cow"]])
        >>> float(metric.compute())
        0.5
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_choices: int = 26, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 1 <= num_choices <= 26:
            raise ValueError(f"num_choices must be in [1, 26], got {num_choices}")
        self.num_choices = num_choices
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        predictions: Sequence[str],
        references: Sequence[str],
        choices: Sequence[Sequence[str]] | None = None,
    ) -> None:
        """Score a batch.

        Args:
            predictions: One generated answer per question.
            references: The correct letter of each question ("B" or "(B)").
            choices: The options of each question (their number bounds the valid letters).

        Raises:
            ValueError: If the batch sizes differ or a reference is not a letter.
        """
        if isinstance(predictions, str) or isinstance(references, str):
            raise ValueError("predictions and references must be sequences with one entry per question")
        if len(predictions) != len(references) or (choices is not None and len(choices) != len(predictions)):
            raise ValueError("predictions, references and choices must have one entry per question")
        for i, (prediction, reference) in enumerate(zip(predictions, references)):
            options = list(choices[i]) if choices is not None and choices[i] else None
            letter = extract_choice(prediction, len(options) if options else self.num_choices, options)
            self.correct += int(letter == _reference_letter(reference))
        self.total += len(predictions)

    def compute(self) -> Tensor:
        """The accuracy in ``[0, 1]`` (0 before any update)."""
        return self.correct.double() / self.total.clamp(min=1)
