"""VQA accuracy exactly as the official VQA evaluation script computes it (VQAv2, OK-VQA; paper Table 15).

The default is a line-by-line port of ``vqaEval.py`` of the VQA API (``GT-Vision-Lab/VQA``, the version released
with VQA v2.0, commit ``458a8b2``, which the EvalAI server's VQA evaluation follows), quirks included:

1. the prediction loses newlines, tabs and outer spaces, then gets ``processPunctuation`` and
   ``processDigitArticle`` (lower case, number words to digits, no articles, contractions restored);
2. the human answers are left as they are when all of them agree; otherwise each one gets
   ``processPunctuation`` only (no lower-casing, no number words, no articles);
3. for each human answer, the other answers that equal the prediction count ``min(1, n / 3)``; the
   accuracy is the mean over these leave-one-out subsets.

So ``"one"`` against three ``"1"`` and seven ``"one"`` scores 0.9 (only the three ``"1"`` match). The
script in the repository's master branch (``a013f00``, 2021) changed step 1-2 to normalise both sides fully,
but only when the human answers disagree; ``reference_normalization="full"`` normalises both sides fully
always, as MMF's TextVQA evaluator (``m4c_evaluator.py``) does for TextVQA, whose raw human answers are not
normalised like VQAv2's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from torchmetrics import Metric

from vlmkit.eval.metrics._common import add_mean_states, add_scores, mean_score, reference_lists

__all__ = ["ReferenceNormalization", "VQAAccuracy", "normalize_vqa_answer", "vqa_accuracy"]

#: How the human answers are normalised: ``official`` (the VQA script) or ``full`` (like the prediction).
ReferenceNormalization = Literal["official", "full"]
_REFERENCE_NORMALIZATIONS = ("official", "full")

#: ``contractions`` of ``vqaEval.py``, verbatim (the capitalised keys can never match: words are lower-cased first).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
#: ``manualMap`` of ``vqaEval.py``: number words to digits.
MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset(["a", "an", "the"])
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# The official pattern, typo included: "(?!<=\d)" is a look-ahead, so it strips every period not followed by a digit.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def _process_punctuation(text: str) -> str:
    """``VQAEval.processPunctuation``: drop (next to a space, or if a digit comma digit occurs) or blank out marks."""
    out = text
    strip_all = _COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATION:
        out = out.replace(mark, "" if strip_all or mark + " " in text or " " + mark in text else " ")
    # The official call passes re.UNICODE (= 32) where ``count`` goes: at most 32 periods are removed.
    return _PERIOD_STRIP.sub("", out, count=re.UNICODE)


def _process_digit_article(text: str) -> str:
    """``VQAEval.processDigitArticle``: lower-case, number words to digits, drop articles, restore contractions."""
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_vqa_answer(text: str) -> str:
    """Normalise an answer as the official VQA evaluation does.

    Steps of ``vqaEval.py`` (Antol et al., 2015, "VQA: Visual Question Answering"; Goyal et al., 2017):
    newlines and tabs become spaces; punctuation is removed (or replaced by a space when not next to one;
    all of it is removed if the text has a digit-comma-digit); periods not followed by a digit are
    stripped; then lower-case, number words to digits (``two`` -> ``2``), articles dropped, and
    contractions written without apostrophe restored (``dont`` -> ``don't``).

    Args:
        text: A predicted or reference answer.

    Returns:
        The normalised answer.

    Example:
        >>> normalize_vqa_answer("Two dogs.")
        '2 dogs'
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def vqa_accuracy(
    prediction: str, references: Sequence[str], reference_normalization: ReferenceNormalization = "official"
) -> float:
    """VQA accuracy of one answer: ``min(#humans that said it / 3, 1)``, averaged over leave-one-out subsets.

    For each reference, the other references are the "humans"; the per-subset accuracies are averaged
    (``vqaEval.py``). With ten references this is 0.3, 0.6, 0.9, 1.0 for 1, 2, 3, 4+ matches; fewer
    references use the same formula. Each reference is one human (``vqaEval.py`` leaves out one answer
    record at a time; VQA's records differ by ``answer_id`` even when their answers are equal).

    Args:
        prediction: The generated answer.
        references: The human answers (ten in VQAv2/TextVQA).
        reference_normalization: ``official``: as ``vqaEval.py`` (see the module docstring), the human
            answers are compared as given when they all agree, else with punctuation processed only.
            ``full``: every human answer is normalised like the prediction (:func:`normalize_vqa_answer`).

    Returns:
        The accuracy in ``[0, 1]``.

    Raises:
        ValueError: If there are no references or ``reference_normalization`` is unknown.

    Example:
        >>> vqa_accuracy("one", ["1"] * 3 + ["one"] * 7)
        0.9
        >>> vqa_accuracy("one", ["1"] * 3 + ["one"] * 7, reference_normalization="full")
        1.0
    """
    if not references:
        raise ValueError("vqa_accuracy needs at least one reference")
    _check_reference_normalization(reference_normalization)
    answer = normalize_vqa_answer(prediction)
    if reference_normalization == "full":
        humans = [normalize_vqa_answer(ref) for ref in references]
    elif len(set(references)) > 1:
        humans = [_process_punctuation(ref) for ref in references]
    else:
        humans = list(references)
    hits = [human == answer for human in humans]
    matches = sum(hits)
    return sum(min(1.0, (matches - hit) / 3) for hit in hits) / len(hits)


def _check_reference_normalization(value: str) -> None:
    if value not in _REFERENCE_NORMALIZATIONS:
        raise ValueError(f"reference_normalization must be one of {_REFERENCE_NORMALIZATIONS}, got {value!r}")


class VQAAccuracy(Metric):
    """Mean VQA accuracy over questions (VQAv2, TextVQA, VizWiz; Antol et al., 2015).

    Each question scores :func:`vqa_accuracy` of its answer against its human answers (by default exactly
    as the official ``vqaEval.py``); the metric is the mean over questions, synced across ranks as a sum and
    a count.

    Args:
        reference_normalization: ``official`` (VQAv2, OK-VQA: the official script) or ``full`` (human answers
            normalised like the prediction, as MMF's TextVQA evaluator; for TextVQA's raw answers).
        **kwargs: Passed to ``torchmetrics.Metric``.

    Raises:
        ValueError: If ``reference_normalization`` is unknown.

    Example:
        >>> metric = VQAAccuracy()
        >>> metric.update(["Two"], [["2"] * 10])
        >>> float(metric.compute())
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, reference_normalization: ReferenceNormalization = "official", **kwargs) -> None:
        super().__init__(**kwargs)
        _check_reference_normalization(reference_normalization)
        self.reference_normalization = reference_normalization
        add_mean_states(self)

    def update(self, predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> None:
        """Score a batch.

        Args:
            predictions: One generated answer per question.
            references: The human answers of each question.
        """
        refs = reference_lists(predictions, references)
        norm = self.reference_normalization
        add_scores(self, [vqa_accuracy(pred, ref, norm) for pred, ref in zip(predictions, refs)])

    compute = mean_score
