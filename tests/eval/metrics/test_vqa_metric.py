import copy
import random
import re

import pytest
import torch

from vlmkit.eval.metrics import VQAAccuracy, normalize_vqa_answer, vqa_accuracy
from vlmkit.eval.metrics.vqa import CONTRACTIONS


class OfficialVQAEval:
    """Oracle: the logic of ``vqaEval.py`` (GT-Vision-Lab/VQA, commit 458a8b2), statement by statement.

    Kept deliberately literal (answer records with ``answer_id``, in-place processing of the records, the
    record comparison ``item != gtAnsDatum``, ``manualMap.setdefault``, ``re.UNICODE`` passed as ``count``);
    only the contraction table is shared with vlmkit (checked equal to the script's when it was ported).
    """

    def __init__(self):
        self.contractions = CONTRACTIONS
        self.manualMap = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                          "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
        self.articles = ["a", "an", "the"]
        self.periodStrip = re.compile(r"(?!<=\d)(\.)(?!\d)")
        self.commaStrip = re.compile(r"(\d)(\,)(\d)")
        self.punct = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                      ">", "<", "@", "`", ",", "?", "!"]  # fmt: skip

    def accuracy(self, res_answer, gt_answers):  # the body of ``evaluate``'s loop for one question
        gts = [{"answer": ans, "answer_confidence": "yes", "answer_id": i + 1} for i, ans in enumerate(gt_answers)]
        resAns = res_answer
        resAns = resAns.replace("\n", " ")
        resAns = resAns.replace("\t", " ")
        resAns = resAns.strip()
        resAns = self.processPunctuation(resAns)
        resAns = self.processDigitArticle(resAns)
        gtAcc = []
        gtAnswers = [ans["answer"] for ans in gts]
        if len(set(gtAnswers)) > 1:
            for ansDic in gts:
                ansDic["answer"] = self.processPunctuation(ansDic["answer"])
        for gtAnsDatum in gts:
            otherGTAns = [item for item in gts if item != gtAnsDatum]
            matchingAns = [item for item in otherGTAns if item["answer"] == resAns]
            acc = min(1, float(len(matchingAns)) / 3)
            gtAcc.append(acc)
        return float(sum(gtAcc)) / len(gtAcc)

    def processPunctuation(self, inText):
        outText = inText
        for p in self.punct:
            if (p + " " in inText or " " + p in inText) or (re.search(self.commaStrip, inText) is not None):
                outText = outText.replace(p, "")
            else:
                outText = outText.replace(p, " ")
        outText = self.periodStrip.sub("", outText, re.UNICODE)
        return outText

    def processDigitArticle(self, inText):
        outText = []
        tempText = inText.lower().split()
        for word in tempText:
            word = self.manualMap.setdefault(word, word)
            if word not in self.articles:
                outText.append(word)
            else:
                pass
        for wordId, word in enumerate(outText):
            if word in self.contractions:
                outText[wordId] = self.contractions[word]
        outText = " ".join(outText)
        return outText


# (prediction, human answers, official score, score with reference_normalization="full"), derived by hand
# from vqaEval.py: the prediction is always normalised; the humans only get processPunctuation, and only
# when they disagree.
HAND_CASES = [
    # The case: "one" -> "1"; the seven "one" stay "one", so 3 humans match: 0.9.
    ("one", ["1"] * 3 + ["one"] * 7, 0.9, 1.0),
    ("Two", ["2"] * 10, 1.0, 1.0),  # all agree: compared as given, and the prediction becomes "2"
    ("yes", ["Yes"] * 10, 0.0, 1.0),  # all agree: "Yes" is never lower-cased
    ("yes", ["Yes"] * 9 + ["yes"], 0.3, 1.0),  # disagree: punctuation only, still "Yes" x 9
    ("dog", ["the dog"] * 8 + ["dog"] * 2, 0.6, 1.0),  # the humans keep their article
    ("3", ["3."] * 10, 0.0, 1.0),  # all agree: the period stays
    ("3", ["3."] * 9 + ["3"], 1.0, 1.0),  # disagree: "3." -> "3", 10 matches
    ("hot-dog", ["hot-dog"] * 5 + ["hot dog"] * 5, 1.0, 1.0),  # "-" between letters becomes a space on both sides
    ("red, white", ["red white"] * 10, 1.0, 1.0),  # ", " touches a space: the comma is dropped
    ("1,000", ["1000"] * 2 + ["1,000"] * 8, 1.0, 1.0),  # digit-comma-digit: every mark dropped
    ("dont", ["don't"] * 10, 1.0, 1.0),
    ("dont", ["dont"] * 10, 0.0, 1.0),  # the prediction becomes "don't", the humans stay "dont"
    ("  Blue\n", ["blue"] * 3 + ["navy"] * 7, 0.9, 0.9),
]


@pytest.mark.parametrize(("prediction", "references", "official", "full"), HAND_CASES)
def test_hand_computed_scores(prediction, references, official, full):
    assert OfficialVQAEval().accuracy(prediction, references) == pytest.approx(official, abs=1e-12)
    assert vqa_accuracy(prediction, references) == pytest.approx(official, abs=1e-12)
    assert vqa_accuracy(prediction, references, reference_normalization="full") == pytest.approx(full, abs=1e-12)


_PIECES = [
    "one", "1", "two", "2", "ten", "10", "none", "0", "a", "an", "the", "The", "dog", "Dog", "DOG", "yes", "Yes",
    "no", "don't", "dont", "its", "it's", "whats", "3.5", "3.", "1,000", "1000", "2:30", "red/blue", "hot-dog",
    "x_y", "(a)", "[b]", "{c}", "a?", "wow!", "\"q\"", "e.g.", "U.S.", "Mr.", "@home", "a+b", "1=1", "<>",
    "`tick`", "back\\slash", ";", ",", ".", "-", "...", "Id've", "ma'am", "café", "İ",
]  # fmt: skip
_SEPARATORS = [" ", " ", " ", "  ", ", ", ",", "\t", "\n", "", "-", "/", ". "]


def _random_answer(rng):
    pieces = [rng.choice(_PIECES) for _ in range(rng.choice([1, 1, 1, 2, 2, 3]))]
    text = pieces[0] + "".join(rng.choice(_SEPARATORS) + piece for piece in pieces[1:])
    return rng.choice(["", "", " ", "\t", "\n"]) + text + rng.choice(["", "", " ", ".", "\n"])


def _perturbed(rng, answer):
    """A prediction close to a human answer: other case, an article, a period, a number word."""
    words = {"1": "one", "2": "two", "10": "ten", "0": "none", "don't": "dont", "it's": "its"}
    changes = [
        str.upper,
        str.capitalize,
        lambda text: "the " + text,
        lambda text: text + ".",
        lambda text: " ".join(words.get(word, word) for word in text.split(" ")),
    ]
    return rng.choice(changes)(answer)


def test_matches_the_official_script_on_random_answers():
    rng = random.Random(0)
    oracle = OfficialVQAEval()
    nonzero = 0
    for _ in range(3000):
        # Human answers like VQA's (normalised words) or raw, in pools of one to three distinct answers.
        pool = [rng.choice([rng.choice(_PIECES), _random_answer(rng)]) for _ in range(rng.choice([1, 2, 3]))]
        references = [rng.choice(pool) for _ in range(rng.choice([10, 10, 10, 3, 1]))]
        prediction = rng.choice([rng.choice(pool), _perturbed(rng, rng.choice(pool)), _random_answer(rng)])
        expected = oracle.accuracy(prediction, copy.deepcopy(references))
        assert vqa_accuracy(prediction, references) == expected, (prediction, references)
        nonzero += expected > 0
    assert nonzero > 300  # the cases exercise matches, not only misses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two", "2"),
        ("a dog.", "dog"),
        ("The Dog!", "dog"),
        ("an apple", "apple"),
        ("dont", "don't"),
        ("Don't", "don't"),
        ("none", "0"),
        ("ten", "10"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # digit-comma-digit: every mark is removed, not blanked
        ("yes, it is", "yes it is"),  # ", " touches a space: removed
        ("red/blue", "red blue"),  # no space beside it: blanked
        ("  left\tside\n", "left side"),
        ("its", "its"),
        ("whats up", "what's up"),
        ("Id've", "id've"),  # the official dict's capitalised keys never match
    ],
)
def test_normalize_vqa_answer(text, expected):
    assert normalize_vqa_answer(text) == expected


def test_number_word_matches_digit_references():
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0


def test_article_and_period_are_ignored():
    assert vqa_accuracy("a dog.", ["dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9, abs=1e-12)


def test_contraction_without_apostrophe_matches():
    assert vqa_accuracy("dont", ["don't"] * 10) == 1.0


@pytest.mark.parametrize(("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_over_ten_answers(matches, expected):
    # k matches: k subsets (the match left out) see k-1, 10-k subsets see k; each scores min(n / 3, 1).
    # k=1: 9 * 1/3 / 10 = 0.3; k=2: (2 * 1/3 + 8 * 2/3) / 10 = 0.6; k=3: (3 * 2/3 + 7) / 10 = 0.9.
    references = ["yes"] * matches + ["no"] * (10 - matches)
    assert vqa_accuracy("yes", references) == pytest.approx(expected, abs=1e-12)


def test_fewer_references_use_the_same_formula():
    assert vqa_accuracy("cat", ["cat", "cat"]) == pytest.approx(1 / 3)  # each subset holds one match
    assert vqa_accuracy("cat", ["cat", "dog", "cat", "cat", "cat"]) == pytest.approx((4 * 1 + 1 * 1) / 5)


def test_metric_is_the_mean_over_questions():
    metric = VQAAccuracy()
    metric.update(["Two", "yes"], [["2"] * 10, ["yes"] + ["no"] * 9])
    metric.update(["blue"], ["red"])  # a single reference string is one reference
    value = metric.compute()
    assert value.dtype == torch.float64
    assert float(value) == pytest.approx((1.0 + 0.3 + 0.0) / 3)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert float(metric.compute()) == 0.0


def test_metric_reference_normalization():
    official, full = VQAAccuracy(), VQAAccuracy(reference_normalization="full")
    for metric in (official, full):
        metric.update(["one", "yes"], [["1"] * 3 + ["one"] * 7, ["Yes"] * 10])
    assert float(official.compute()) == pytest.approx((0.9 + 0.0) / 2)
    assert float(full.compute()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reference_normalization"):
        VQAAccuracy(reference_normalization="normalized")
    with pytest.raises(ValueError, match="reference_normalization"):
        vqa_accuracy("a", ["a"], reference_normalization="lower")


def test_metric_rejects_bad_batches():
    metric = VQAAccuracy()
    with pytest.raises(ValueError, match="2 predictions but 1"):
        metric.update(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"):
        metric.update(["a"], [[]])
