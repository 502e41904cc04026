import pytest

from vlmkit.eval.metrics import ANLS, anls_score, levenshtein


@pytest.mark.parametrize(
    ("a", "b", "distance"), [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "abc", 0), ("ab", "ba", 2)]
)
def test_levenshtein(a, b, distance):
    assert levenshtein(a, b) == distance == levenshtein(b, a)


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("Invoice", ["invoice"], 1.0),  # exact after lower-casing
        ("  the   total ", ["The total"], 1.0),  # whitespace stripped and collapsed
        ("", ["abc"], 0.0),  # empty prediction
        ("abc", [""], 0.0),  # empty reference
        ("", [""], 1.0),  # both empty: identical
        ("abcxy", ["abcde"], 0.6),  # NL = 2/5 = 0.4 < 0.5: kept
        ("abxyz", ["abcde"], 0.0),  # NL = 3/5 = 0.6 > 0.5: zero
        ("abcdefghij", ["abcdefghxy"], 0.8),
        ("abcdefxyzw", ["abcdefghij"], 0.6),  # NL = 0.4, just below the threshold
        ("abcdxyzwvu", ["abcdefghij"], 0.0),  # NL = 0.6, just above
        ("ab", ["ac"], 0.5),  # NL == 0.5: kept, as the official script does
        ("1995", ["2001", "1990", "nineteen"], 0.75),  # best reference
    ],
)
def test_anls_score(prediction, references, expected):
    assert anls_score(prediction, references) == pytest.approx(expected, abs=1e-12)


def test_threshold_is_configurable():
    assert anls_score("abcxy", ["abcde"], threshold=0.7) == 0.0
    assert anls_score("abxyz", ["abcde"], threshold=0.4) == pytest.approx(0.4)


def test_metric_is_the_mean_over_questions():
    metric = ANLS()
    metric.update(["abcxy", "Total"], [["abcde"], ["total", "sum"]])
    metric.update(["zzz"], [["abc"]])
    assert float(metric.compute()) == pytest.approx((0.6 + 1.0 + 0.0) / 3)


def test_rejects_a_threshold_outside_unit_interval():
    with pytest.raises(ValueError, match="threshold"):
        ANLS(threshold=1.5)
