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


COLOURS = ["red", "yellow", "blue", "green"]
NUMBERS = ["1", "2", "3", "4"]
VITAMINS = ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin E"]

# (output, options, expected letter). "VLMEvalKit" is can_infer_option + can_infer_text (vlmeval/utils/
# matching_util.py), "MMMU" is parse_multi_choice_response as lmms-eval runs it; their answers were worked out
# from their rules for every row, and rows where vlmkit differs say why.
BROAD_TABLE = [
    # Letters with punctuation and brackets.
    ("B", COLOURS, "B"),
    ("b", COLOURS, "B"),  # VLMEvalKit: None (capitals only); MMMU: random. A bare letter is unambiguous.
    ("(B)", COLOURS, "B"),
    ("(b)", COLOURS, "B"),  # VLMEvalKit: None, MMMU: random (capitals only)
    ("[C]", COLOURS, "C"),  # MMMU: random (only "(C)", "C " and "C." count)
    ("B.", COLOURS, "B"),
    ("B)", COLOURS, "B"),  # MMMU: random
    ("B:", COLOURS, "B"),
    ("**D**", COLOURS, "D"),  # MMMU: random (markdown bold)
    ("'A'", COLOURS, "A"),  # VLMEvalKit: None (the quotes stay on the token)
    ("{B}", COLOURS, "B"),  # MMMU: random
    # Answer statements.
    ("The answer is (B)", COLOURS, "B"),
    ("The answer is B.", COLOURS, "B"),
    ("Answer: C", COLOURS, "C"),
    ("answer: c", COLOURS, "C"),  # VLMEvalKit: None, MMMU: random (capitals only)
    ("The correct answer is **B**.", COLOURS, "B"),  # MMMU: random
    ("Option D", COLOURS, "D"),
    ("The best option is (c) blue.", COLOURS, "C"),
    ("My answer: (a)", COLOURS, "A"),  # VLMEvalKit: None, MMMU: random (capitals only)
    ("Correct choice: D", COLOURS, "D"),
    ("Answer: B\nA. red\nB. yellow", COLOURS, "B"),  # VLMEvalKit: None, MMMU: A; the statement is explicit
    # An option's text inside a sentence.
    ("Yellow is the correct answer.", COLOURS, "B"),  # MMMU: random (text is read only after 5+ words)
    ("I believe the color is blue.", COLOURS, "C"),
    ("It's green!", COLOURS, "D"),  # MMMU: random
    # "red" inside the mentioned "dark red" is not a second option. VLMEvalKit: None (two substrings match),
    # MMMU: random.
    ("The car is dark red.", ["red", "dark red", "blue", "green"], "B"),
    ("B, the red one", COLOURS, "B"),  # the letter comes before option text (VLMEvalKit agrees; MMMU: random)
    # "D" is part of the option text "Vitamin D" (option C), not a label. VLMEvalKit and MMMU: D (wrong).
    ("Vitamin D", VITAMINS, "C"),
    ("The answer is Vitamin D.", VITAMINS, "C"),  # VLMEvalKit and MMMU: D
    ("D", VITAMINS, "D"),
    # Echoes of the option list: no answer (VLMEvalKit agrees; MMMU picks one: A, B and random).
    ("A. red\nB. yellow\nC. blue\nD. green", COLOURS, None),
    ("(A) red (B) yellow", COLOURS, None),
    ("A) red B) yellow", COLOURS, None),
    ("A. red", COLOURS, "A"),  # one labelled option is an answer
    # Several letters: ambiguous, never the last one (MMMU takes the last: B, C, C, C, B).
    ("A or B", COLOURS, None),
    ("Both A and C are right", COLOURS, None),
    ("B, not C", COLOURS, None),
    ("The answer is B. Actually, the answer is C.", COLOURS, None),  # VLMEvalKit: B (its first statement)
    ("(A) is wrong and (B) is wrong", COLOURS, None),
    # Lower-case "a" as a word is the article; alone or ending a statement it is the letter.
    ("a", COLOURS, "A"),  # VLMEvalKit: None, MMMU: random
    ("a dog", COLOURS, None),
    ("the answer is a", COLOURS, "A"),  # MMMU: random
    ("the answer is a dog", COLOURS, None),  # VLMEvalKit: A (its "answer is" pattern ignores case)
    ("A dog", COLOURS, None),  # VLMEvalKit and MMMU: A (the article read as a letter)
    ("I think a is right", COLOURS, None),
    # Numeric options: the option's text, as a whole answer or as a whole word.
    ("3", NUMBERS, "C"),  # MMMU: random
    ("The answer is 3", NUMBERS, "C"),  # VLMEvalKit: None (answer longer than twice the options), MMMU: random
    ("There are 3 apples.", NUMBERS, "C"),  # VLMEvalKit: None (same), MMMU: random
    ("3 or 4", NUMBERS, None),
    ("C", NUMBERS, "C"),
    ("12", NUMBERS, None),  # neither "1" nor "2" as a whole word
    # Nothing to extract (MMMU: random for each).
    ("", COLOURS, None),
    ("   ", COLOURS, None),
    ("None of the above", COLOURS, None),
    ("E", COLOURS, None),  # beyond the four options
    ("I'd say C", COLOURS, "C"),
    # The lone capital D wins over the mentioned "blue". VLMEvalKit: None (D is not among the last 4 words).
    ("I think it's D because the sky is blue.", COLOURS, "D"),
]


@pytest.mark.parametrize(("text", "choices", "expected"), BROAD_TABLE)
def test_broad_table(text, choices, expected):
    assert extract_choice(text, len(choices), choices) == expected


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
