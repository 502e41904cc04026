"""The words of vlmkit's synthetic tasks: names, question templates, answers, and the corpus of all of them.

The synthetic data (:mod:`vlmkit.data.synthetic`) draws its questions and captions from these, and the built-in
offline tokenizer (:func:`~vlmkit.text.tokenizer.build_synthetic_tokenizer`) is trained on :func:`vocabulary_corpus`,
so every word the generator can emit is merged into few tokens. Both sides read the same definitions here.
"""

from __future__ import annotations

from collections.abc import Sequence

TASKS = ("color", "shape", "count", "position", "reading", "caption")
SHAPES = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
"""Colour names and the RGB they are drawn in."""
WORDS = (
    "cat", "dog", "sun", "tree", "book", "fish", "bird", "car", "hat", "cup",
    "milk", "door", "star", "moon", "cake", "ball", "bus", "key", "pen", "box",
    "lamp", "ship", "rain", "frog", "shoe", "bed", "apple", "house", "chair", "bread",
)  # fmt: skip
MAX_SHAPES = 3

QUESTIONS = {
    "color": "What color is the {shape}?",
    "shape": "Which shape is {color}?",
    "count": "How many shapes are there?",
    "position": "Is the {color} {shape} on the left or the right?",
    "reading": "What word is written in the image?",
    "caption": "Describe the image.",
}
"""Question template of each task (``{shape}``, ``{color}`` filled in)."""
ANSWERS = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "count": tuple(str(n) for n in range(1, MAX_SHAPES + 1)),
    "position": ("left", "right"),
    "reading": WORDS,
}
"""Every possible answer of each closed-answer task."""


def article(word: str) -> str:
    """``"an"`` before a vowel, else ``"a"``."""
    return "an" if word[0] in "aeiou" else "a"


def describe(shapes: Sequence[tuple[str, str]]) -> str:
    """The caption of ``(color, kind)`` shapes in the order given, e.g. ``"a red circle and a blue square."``."""
    parts = [f"{article(color)} {color} {kind}" for color, kind in shapes]
    return (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]) + "."


def vocabulary_corpus() -> list[str]:
    """Text covering every word the generator can emit, for training a tokenizer.

    Contains every question template filled with every slot value, every answer, and captions
    covering every shape, colour, word and connective (with the punctuation used).
    """
    corpus = [QUESTIONS["count"], QUESTIONS["reading"], QUESTIONS["caption"]]
    corpus += [QUESTIONS["color"].format(shape=s) for s in SHAPES]
    corpus += [QUESTIONS["shape"].format(color=c) for c in COLORS]
    corpus += [QUESTIONS["position"].format(color=c, shape=s) for c in COLORS for s in SHAPES]
    corpus += [answer for task in TASKS if task != "caption" for answer in ANSWERS[task]]
    items = [(c, s) for c in COLORS for s in SHAPES]
    for i, item in enumerate(items):
        others = [items[(i + 7) % len(items)], items[(i + 13) % len(items)]]
        for k in range(MAX_SHAPES):  # one caption of each length
            corpus.append(describe([item, *others[:k]]))
    corpus += [f'the word "{word}".' for word in WORDS]
    return corpus
