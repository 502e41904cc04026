import pytest
import torch

from vlmkit.eval.metrics import VQAAccuracy, normalize_vqa_answer, vqa_accuracy


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


def test_metric_rejects_bad_batches():
    metric = VQAAccuracy()
    with pytest.raises(ValueError, match="2 predictions but 1"):
        metric.update(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"):
        metric.update(["a"], [[]])
