import pytest

from vlmkit.eval.metrics import MultipleChoiceAccuracy, extract_choice


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("[C]", "C"),
        ("**D**", "D"),
        ("'A'", "A"),
        ("The answer is (B)", "B"),
        ("The answer is (b), the red one.", "B"),
        ("Answer: C", "C"),
        ("answer: c", "C"),
        ("My answer: (a)", "A"),
        ("The answer is: C) 42", "C"),
        ("Answer choice: B", "B"),
        ("the correct option is b.", "B"),
        ("Option D", "D"),
        ("b) blue", "B"),
        ("(C) cat", "C"),
        ("B. blue", "B"),
        ("B - blue", "B"),
        ("I think it's D because the sky is blue.", "D"),
        ("I'd say C", "C"),
        ("I choose B", "B"),
        ("It is A.", "A"),
        ("A is correct", "A"),
        ("The answer is D. Vitamin D is essential.", "D"),  # the explicit statement wins
        # None: absent, out of range or ambiguous.
        ("", None),
        ("A dog", None),  # the article
        ("The answer is a dog", None),
        ("None of the above", None),
        ("E", None),  # only A-D are valid
        ("A or B", None),
        ("Both A and C are right", None),
        ("The answer is B. Actually, the answer is C.", None),
        ("(A) is wrong and (B) is wrong", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, num_choices=4) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Blue.", "B"),
        ("blue", "B"),
        ("The answer is green", "C"),
        ("A cat", None),  # not an option, and "A" is the article
        ("purple", None),
        ("C", "C"),  # letters still work
    ],
)
def test_extract_choice_from_option_text(text, expected):
    assert extract_choice(text, 3, choices=["red", "blue", "green"]) == expected


def test_option_text_starting_with_an_article():
    assert extract_choice("A dog", 2, choices=["A cat", "A dog"]) == "B"


def test_extract_choice_validates_num_choices():
    with pytest.raises(ValueError, match="num_choices"):
        extract_choice("A", 0)


def test_accuracy_uses_each_question_options():
    metric = MultipleChoiceAccuracy()
    metric.update(
        ["Answer: B", "(a) cat", "dog", "I think E"],
        ["B", "C", "(B)", "E"],
        choices=[["x", "y"], ["cat", "dog", "cow"], ["cat", "dog"], ["p", "q", "r", "s"]],
    )
    # right, wrong letter, right by option text, E is not among 4 options.
    assert float(metric.compute()) == pytest.approx(2 / 4)


def test_accuracy_without_choices_accepts_any_letter():
    metric = MultipleChoiceAccuracy()
    metric.update(["The answer is (F)", "G"], ["F", "H"])
    assert float(metric.compute()) == pytest.approx(0.5)


def test_accuracy_rejects_non_letter_references():
    with pytest.raises(ValueError, match="option letters"):
        MultipleChoiceAccuracy().update(["A"], ["blue"])
