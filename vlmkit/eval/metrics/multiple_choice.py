r"""Multiple-choice accuracy with letter extraction from free-form answers (MMMU, MathVista, MMBench).

:func:`extract_choice` applies these rules in order and stops at the first that finds something; when that
rule finds several different options, the answer is ambiguous (``None``), never a guess:

1. **Bare letter**: the whole answer is one letter, in any case, bracketed or followed by ``.``/``:``/``)``
   (``"B"``, ``"(b)"``, ``"[C]"``, ``"D."``, ``"**A**"``).
2. **Answer statement**: ``"The answer is (B)"``, ``"Answer: C"``, ``"the correct option is b."``,
   ``"Option D"``; a lower-case letter followed by a word is the article (``"the answer is a dog"``).
3. **Echo of the option list**: labels of two or more options (``"A. red\nB. blue"``, ``"(A) x (B) y"``)
   without a statement are a restated list, not an answer: ``None``.
4. **Option label**: the answer starts with ``"B)"``, ``"B."``, ``"B:"``, ``"B -"``, or has a bracketed
   ``"(D)"`` anywhere.
5. **Whole option text** (with ``choices``): the answer, or the answer after ``"The answer is"``, is an
   option's text (``"Blue."`` for ``"blue"``; ``"3"`` for a numeric option).
6. **Lone capital letter**: a standalone capital like ``"I think it's D because..."``; the article ``"A"``
   and the pronoun ``"I"`` before a lower-case word do not count, nor capitals inside a mentioned option
   text (``"Vitamin D"``).
7. **Mentioned option text** (with ``choices``): the text of exactly one option appears in the answer as
   whole words (``"Yellow is the correct answer."``); an option text inside a longer mentioned one
   (``"red"`` in ``"dark red"``) does not count separately.

Letters beyond ``num_choices`` are ignored. Compared with the rule-based matchers of VLMEvalKit
(``can_infer_option`` + ``can_infer_text``) and of MMMU as in lmms-eval (``parse_multi_choice_response``),
vlmkit never picks at random or the last of several candidates (MMMU does both), accepts a lower-case
bare letter (VLMEvalKit only matches capitals), reads option text in answers of any length (VLMEvalKit
skips answers longer than twice the options, MMMU answers of five words or fewer), and, like VLMEvalKit,
treats an echoed option list as no answer (MMMU picks a letter from it).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from torchmetrics import Metric

from vlmkit.eval.metrics._common import add_mean_states, add_scores, mean_score

__all__ = ["MultipleChoiceAccuracy", "extract_choice"]

_BARE = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:]?")
_LEADING = re.compile(r"[(\[]([A-Za-z])[)\]]|([A-Za-z])[).:](?=\s)|([A-Z])(?=\s+[-–:]\s)")
_STATEMENT = re.compile(
    r"\b(?:answer|option|choice)(?:\s+(?:is|would\s+be|should\s+be|will\s+be))?\s*:?\s*(?:(?:option|choice)\s+)?"
    r"(?:[(\[]([A-Za-z])[)\]]|([A-Za-z])(?![\w'’]))",
    re.IGNORECASE,
)
_BRACKETED = re.compile(r"[(\[]([A-Za-z])[)\]]")
# An option label as in a restated list: "A. red", "(B) blue", "C) green", "D: 42", at the start or after a space.
_LABEL = re.compile(r"(?:^|(?<=\s))(?:[(\[]([A-Z])[)\]]|([A-Z])[).:])(?=\s*\S)")
_CAPITAL = re.compile(r"(?<![\w'’])([A-Z])(?![\w'’])")
# After these words a capital "A" or "I" is a letter ("A is correct"); before other lower-case words it is
# the article or the pronoun ("A dog", "I think").
_LETTER_CONTEXT = frozenset(
    ["is", "was", "would", "should", "seems", "must", "looks", "appears", "and", "or", "because", "since", "as"]
)
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:correct\s+|right\s+|best\s+)?(?:answer|option|choice)\s*(?:is|:)\s*", re.I)


def _clean(text: str) -> str:
    return " ".join(text.replace("*", " ").split()).strip("\"'`“”‘’ ")


def _option_words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def _capital_letters(text: str) -> list[str]:
    letters = []
    for match in _CAPITAL.finditer(text):
        letter, rest = match.group(1), text[match.end() :]
        following = re.match(r"\s+([a-z]\w*)", rest)
        if letter in "AI" and following and following.group(1) not in _LETTER_CONTEXT:
            continue  # the article "A" or the pronoun "I"
        letters.append(letter)
    return letters


def _mentioned_options(text: str, valid: str, choices: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(letter, start, end)`` of each option text found in ``text`` as whole words, nested mentions dropped."""
    found = []
    for letter, option in zip(valid, choices):
        words = _option_words(option)
        if not words:
            continue
        pattern = r"(?<![^\W_])" + r"[\W_]+".join(map(re.escape, words)) + r"(?![^\W_])"
        found += [(letter, m.start(), m.end()) for m in re.finditer(pattern, text, re.IGNORECASE)]
    return [
        (letter, start, end)
        for letter, start, end in found
        if not any(s <= start and end <= e and (s, e) != (start, end) for _, s, e in found)
    ]


def extract_choice(text: str, num_choices: int, choices: Sequence[str] | None = None) -> str | None:
    r"""The option letter a free-form answer picks, or ``None`` when it names none or several.

    Applies the rules of this module's docstring in order (a bare letter; an answer statement; an echoed
    option list gives ``None``; an option label; an option's whole text; a lone capital letter; the one
    option text the answer mentions). Follows the rule-based matching of MMMU (Yue et al., 2024,
    ``parse_multi_choice_response``) and MMBench/VLMEvalKit (Liu et al., 2023, ``can_infer``), but returns
    ``None`` instead of guessing when an answer is ambiguous.

    Args:
        text: The generated answer.
        num_choices: Number of options; valid letters are the first ``num_choices`` of A-Z.
        choices: The options' texts in letter order, to recognise an answer that states one by its text.

    Returns:
        The upper-case letter, or ``None``.

    Raises:
        ValueError: If ``num_choices`` is not in ``[1, 26]``.

    Example:
        >>> extract_choice("The answer is (b), the red one.", num_choices=4)
        'B'
        >>> extract_choice("Yellow is the correct answer.", 3, choices=["red", "yellow", "blue"])
        'B'
        >>> extract_choice("A. red\nB. yellow\nC. blue", 3, choices=["red", "yellow", "blue"]) is None
        True
    """
    if not 1 <= num_choices <= 26:
        raise ValueError(f"num_choices must be in [1, 26], got {num_choices}")
    valid = string.ascii_uppercase[:num_choices]
    cleaned = _clean(text)

    def pick(letters: Sequence[str | None]) -> str | None | bool:
        found = {letter.upper() for letter in letters if letter and letter.upper() in valid}
        return found.pop() if len(found) == 1 else (None if found else False)  # False: rule found nothing

    if (bare := _BARE.fullmatch(cleaned)) and (result := pick([bare.group(1)])) is not False:
        return result
    statements = []
    for match in _STATEMENT.finditer(cleaned):
        bracketed, plain = match.groups()
        # An unbracketed lower-case letter followed by a word is the article: "the answer is a dog".
        if bracketed or plain.isupper() or not re.match(r"\s+\w", cleaned[match.end() :]):
            statements.append(bracketed or plain)
    if (result := pick(statements)) is not False:
        return result
    labels = {a or b for a, b in _LABEL.findall(text)} & set(valid)
    if len(labels) > 1:
        return None  # the option list restated
    leading = _LEADING.match(cleaned)
    labelled = ([next(g for g in leading.groups() if g)] if leading else []) + _BRACKETED.findall(cleaned)
    if (result := pick(labelled)) is not False:
        return result
    mentioned = _mentioned_options(cleaned, valid, choices) if choices else []
    if choices:
        stated = {tuple(_option_words(cleaned)), tuple(_option_words(_ANSWER_PREFIX.sub("", cleaned)))}
        whole = [letter for letter, option in zip(valid, choices) if tuple(_option_words(option)) in stated]
        if (result := pick(whole)) is not False:
            return result
    outside_options = list(cleaned)
    for _, start, end in mentioned:  # "Vitamin D": the capital belongs to the option text
        outside_options[start:end] = " " * (end - start)
    if (result := pick(_capital_letters("".join(outside_options)))) is not False:
        return result
    result = pick([letter for letter, _, _ in mentioned])
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
        add_mean_states(self)

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
        scores = []
        for i, (prediction, reference) in enumerate(zip(predictions, references)):
            options = list(choices[i]) if choices is not None and choices[i] else None
            letter = extract_choice(prediction, len(options) if options else self.num_choices, options)
            scores.append(float(letter == _reference_letter(reference)))
        add_scores(self, scores)

    compute = mean_score
