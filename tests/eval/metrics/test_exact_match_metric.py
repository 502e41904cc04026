import pytest

from vlmkit.eval.metrics import ExactMatch


@pytest.mark.parametrize(
    ("normalize", "prediction", "references", "correct"),
    [
        ("lower", "Red ", ["red"], True),
        ("lower", "dark  red", ["Dark red"], True),
        ("lower", "red.", ["red"], False),
        ("none", "Red", ["red"], False),
        ("none", "red", ["blue", "red"], True),  # any reference
        ("vqa", "Two dogs.", ["2 dogs"], True),
        ("vqa", "the cat", ["cat"], True),
    ],
)
def test_normalizations(normalize, prediction, references, correct):
    metric = ExactMatch(normalize=normalize)
    metric.update([prediction], [references])
    assert float(metric.compute()) == float(correct)


def test_accumulates_over_batches():
    metric = ExactMatch()
    metric.update(["a", "b"], [["a"], ["c"]])
    metric.update(["c"], ["c"])
    assert float(metric.compute()) == pytest.approx(2 / 3)


def test_rejects_unknown_normalization():
    with pytest.raises(ValueError, match="normalize"):
        ExactMatch(normalize="upper")
