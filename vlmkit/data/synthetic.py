"""Deterministic synthetic visual question answering data, generated on the fly (no downloads).

Design: sample ``i`` of seed ``s`` is a pure function of ``(s, i, task, sizes)`` via a ``random.Random``
seeded with a string (hashed with SHA-512 by ``random``, never Python's salted ``hash``), so any worker or
access order sees identical pixels. Layouts are drawn so every question is answerable from the image
(asked-about shapes are unique; left/right targets lie wholly in one half) and answers are spread evenly.
"""

from __future__ import annotations

import functools
import math
import operator
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import Dataset

from vlmkit.data.formats import Record
from vlmkit.text.synthetic_vocabulary import (
    ANSWERS,
    COLORS,
    MAX_SHAPES,
    QUESTIONS,
    SHAPES,
    TASKS,
    WORDS,
    describe,
    vocabulary_corpus,
)

__all__ = [
    "COLORS",
    "MAX_SHAPES",
    "SHAPES",
    "TASKS",
    "WORDS",
    "SyntheticSample",
    "SyntheticVQADataset",
    "answer_space",
    "make_sample",
    "vocabulary_corpus",
]

MIN_ALLOWED_SIZE = 16


@dataclass(frozen=True)
class SyntheticSample:
    """One generated example.

    Attributes:
        image: The RGB image.
        question: A question answerable from the image.
        answer: The single-word answer.
        caption: A short description of the whole image, ending with a period.
        task: The task name, one of ``TASKS``.
    """

    image: Image.Image
    question: str
    answer: str
    caption: str
    task: str


@dataclass(frozen=True)
class _Shape:
    """A drawn shape: kind, colour name and inclusive pixel box ``(x0, y0, x1, y1)``."""

    kind: str
    color: str
    box: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[int, int]:
        return (self.box[0] + self.box[2]) // 2, (self.box[1] + self.box[3]) // 2


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _check_sizes(min_size: int, max_size: int) -> None:
    if min_size < MIN_ALLOWED_SIZE:
        raise ValueError(f"min_size must be >= {MIN_ALLOWED_SIZE}, got {min_size}")
    if min_size > max_size:
        raise ValueError(f"min_size ({min_size}) must be <= max_size ({max_size})")


def _rng(seed: int, index: int, task: str, min_size: int, max_size: int) -> random.Random:
    return random.Random(f"vlmkit.synthetic:{seed}:{index}:{task}:{min_size}:{max_size}")


def _light_background(rng: random.Random) -> tuple[int, int, int]:
    base = rng.randint(225, 250)
    return tuple(min(255, base + rng.randint(0, 5)) for _ in range(3))  # type: ignore[return-value]


def _image_size(rng: random.Random, min_size: int, max_size: int) -> tuple[int, int]:
    """Width and height in ``[min_size, max_size]`` with aspect ratio between 1:2 and 2:1."""
    a = rng.randint(min_size, max_size)
    b = rng.randint(max(min_size, math.ceil(a / 2)), min(max_size, 2 * a))
    return (a, b) if rng.random() < 0.5 else (b, a)


def _random_layout(
    rng: random.Random, width: int, height: int, kinds: list[str], colors: list[str], target_side: str | None = None
) -> list[_Shape]:
    """Place square-boxed shapes without overlap; shape 0 lies wholly in ``target_side`` if given."""
    short = min(width, height)
    lo, hi = math.ceil(short / 4), max(math.ceil(short / 4), int(short * 0.38))
    half = width / 2
    while True:  # restart on the rare dead end; the rng keeps this deterministic
        shapes: list[_Shape] = []
        for i, (kind, color) in enumerate(zip(kinds, colors)):
            size = rng.randint(lo, hi)
            x_lo, x_hi = 0, width - size
            if i == 0 and target_side == "left":
                x_hi = math.floor(half - 2) - size
            elif i == 0 and target_side == "right":
                x_lo = math.ceil(half + 2)
            for _ in range(50):
                x, y = rng.randint(x_lo, x_hi), rng.randint(0, height - size)
                box = (x, y, x + size - 1, y + size - 1)
                if all(_apart(box, other.box) for other in shapes):
                    shapes.append(_Shape(kind, color, box))
                    break
            else:
                break
        if len(shapes) == len(kinds):
            return shapes


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = 2) -> bool:
    return a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1]


def _draw_shapes(width: int, height: int, shapes: list[_Shape], background: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        fill = COLORS[shape.color]
        x0, y0, x1, y1 = shape.box
        if shape.kind == "circle":
            draw.ellipse(shape.box, fill=fill)
        elif shape.kind == "square":
            draw.rectangle(shape.box, fill=fill)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    return image


def _caption(shapes: list[_Shape]) -> str:
    """List shapes left to right, e.g. ``"a red circle, a blue square and an orange triangle."``."""
    return describe([(s.color, s.kind) for s in sorted(shapes, key=lambda s: (s.center, s.box))])


def _shapes_sample(
    rng: random.Random, task: str, min_size: int, max_size: int, max_shapes: int = MAX_SHAPES
) -> tuple[SyntheticSample, list[_Shape]]:
    """Draw a shapes image and its question; also return the layout (used by tests to verify answers)."""
    width, height = _image_size(rng, min_size, max_size)
    background = _light_background(rng)
    while True:  # resample until the question is unambiguous
        n = rng.randint(1, max_shapes)
        kinds = [rng.choice(SHAPES) for _ in range(n)]
        colors = [rng.choice(tuple(COLORS)) for _ in range(n)]
        side = rng.choice(ANSWERS["position"]) if task == "position" else None
        shapes = _random_layout(rng, width, height, kinds, colors, side)
        if task == "color":
            pool = [s for s in shapes if kinds.count(s.kind) == 1]
        elif task == "shape":
            pool = [s for s in shapes if colors.count(s.color) == 1]
        elif task == "position":  # shape 0 was placed in one half; its colour + kind must be unique
            pool = [s for s in shapes[:1] if list(zip(colors, kinds)).count((s.color, s.kind)) == 1]
        else:  # count and caption: the question names no shape
            pool = shapes
        if pool:
            break
    target = rng.choice(pool)
    question = QUESTIONS[task].format(color=target.color, shape=target.kind)
    caption = _caption(shapes)
    answer = {"color": target.color, "shape": target.kind, "count": str(len(shapes)), "caption": caption}.get(
        task, side
    )
    image = _draw_shapes(width, height, shapes, background)
    return SyntheticSample(image, question, str(answer), caption, task), shapes


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType: fixed bitmap font
        return ImageFont.load_default()


def _reading_sample(rng: random.Random, max_size: int) -> SyntheticSample:
    """Render a word in dark text on a light background: height 24-40, width <= ``2 * max_size``."""
    word = rng.choice(WORDS)
    size = rng.randint(14, 24)
    margin_x, margin_y = rng.randint(3, 10), rng.randint(3, 8)
    while True:
        font = _font(size)
        left, top, right, bottom = font.getbbox(word)
        width = right - left + 2 * margin_x
        if width <= 2 * max_size or size <= 6:
            break
        size -= 1
    width = min(width, 2 * max_size)
    height = min(40, max(24, bottom - top + 2 * margin_y))
    ink = tuple(rng.randint(0, 60) for _ in range(3))
    image = Image.new("RGB", (width, height), _light_background(rng))
    y = (height - (bottom - top)) // 2 - top
    ImageDraw.Draw(image).text((margin_x - left, y), word, fill=ink, font=font)
    return SyntheticSample(image, QUESTIONS["reading"], word, f'the word "{word}".', "reading")


def make_sample(
    seed: int, index: int, task: str, min_size: int = 32, max_size: int = 96, max_shapes: int = MAX_SHAPES
) -> SyntheticSample:
    """Generate one sample, a pure function of its arguments.

    Args:
        seed: Dataset seed.
        index: Sample index (any integer).
        task: One of ``TASKS``.
        min_size: Smallest shapes-image side in pixels (>= 16).
        max_size: Largest shapes-image side in pixels; reading images are at most ``2 * max_size`` wide.
        max_shapes: Most shapes per image (1 to ``MAX_SHAPES``); fewer makes the questions easier.

    Returns:
        The sample.

    Raises:
        ValueError: If ``task`` is unknown or the sizes are invalid.
    """
    _check_task(task)
    _check_sizes(min_size, max_size)
    _check_max_shapes(max_shapes)
    rng = _rng(seed, index, task, min_size, max_size)
    if task == "reading":
        return _reading_sample(rng, max_size)
    return _shapes_sample(rng, task, min_size, max_size, max_shapes)[0]


def make_scene(
    seed: int, index: int, task: str = "caption", min_size: int = 32, max_size: int = 96, max_shapes: int = MAX_SHAPES
) -> tuple[SyntheticSample, tuple[tuple[str, str, tuple[int, int, int, int]], ...]]:
    """``make_sample(seed, index, task, ...)`` together with the layout of its image.

    For labels beyond one question, e.g. to pretrain a toy vision encoder on everything the questions ask about
    (colour, shape, count, left/right) or to describe the image in words.

    Returns:
        The sample (identical to ``make_sample``'s) and its objects as ``(shape, colour, (x0, y0, x1, y1))``
        (inclusive pixel box), in drawing order.

    Raises:
        ValueError: If ``task`` is not a shapes task (``reading`` has no layout) or an argument is invalid.
    """
    _check_task(task)
    if task == "reading":
        raise ValueError("task 'reading' draws a word, not shapes: it has no layout")
    _check_sizes(min_size, max_size)
    _check_max_shapes(max_shapes)
    rng = _rng(seed, index, task, min_size, max_size)
    sample, shapes = _shapes_sample(rng, task, min_size, max_size, max_shapes)
    return sample, tuple((s.kind, s.color, s.box) for s in shapes)


_CAPTION_OBJECT = re.compile(r"\ban? (\w+) (\w+)")


def noisy_alt_text(caption: str, rng: random.Random, noise: float = 0.5) -> str:
    """A web-style alt-text for an image described by a clean synthetic ``caption`` (paper Table 6).

    Alt-texts are short, unpunctuated and partly wrong or irrelevant: each object of the caption is, with
    probability ``noise``, given a wrong colour, a wrong shape or dropped (one of the three, evenly); with
    probability ``noise`` the objects are shuffled; and with probability ``noise`` 1-3 words unrelated to the
    image (from ``WORDS``) are inserted. ``noise=0`` gives the caption's objects without articles.

    Args:
        caption: A caption as produced by the generator (``"a red circle and a blue square."``).
        rng: Random source (seeded per sample for determinism).
        noise: Corruption probability in ``[0, 1]``.

    Returns:
        E.g. ``"red square cake blue square"`` for ``"a red circle and a blue square."``.

    Raises:
        ValueError: If ``noise`` is outside ``[0, 1]`` or ``caption`` names no object.
    """
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    objects = _CAPTION_OBJECT.findall(caption)
    if not objects:
        raise ValueError(f"caption {caption!r} names no '<colour> <shape>' object")
    words: list[str] = []
    for color, kind in objects:
        if rng.random() < noise:
            corruption = rng.randrange(3)
            if corruption == 2:
                continue  # dropped
            if corruption == 0:
                color = rng.choice([c for c in COLORS if c != color])
            else:
                kind = rng.choice([k for k in SHAPES if k != kind])
        words.append(f"{color} {kind}")
    if len(words) > 1 and rng.random() < noise:
        rng.shuffle(words)
    if rng.random() < noise or not words:
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randint(0, len(words)), rng.choice(WORDS))
    return " ".join(words)


def _check_max_shapes(max_shapes: int) -> None:
    if not 1 <= max_shapes <= MAX_SHAPES:
        raise ValueError(f"max_shapes must be between 1 and {MAX_SHAPES}, got {max_shapes}")


class SyntheticVQADataset(Dataset):
    """A fixed-length map-style dataset of synthetic samples; sample ``i`` has task ``tasks[i % len(tasks)]``.

    Args:
        num_samples: Number of samples.
        seed: Seed; different seeds give different data.
        tasks: Task names to cycle through (round-robin), each in ``TASKS``.
        min_size: Smallest shapes-image side in pixels (>= 16).
        max_size: Largest shapes-image side in pixels.
        max_shapes: Most shapes per image (1 to ``MAX_SHAPES``).

    Raises:
        ValueError: If an argument is invalid.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        tasks: Sequence[str] = ("color", "shape", "count", "position"),
        min_size: int = 32,
        max_size: int = 96,
        max_shapes: int = MAX_SHAPES,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if isinstance(tasks, str) or not tasks:
            raise ValueError(f"tasks must be a non-empty sequence of task names from {TASKS}, got {tasks!r}")
        for task in tasks:
            _check_task(task)
        _check_sizes(min_size, max_size)
        _check_max_shapes(max_shapes)
        self.num_samples, self.seed, self.tasks = num_samples, seed, tuple(tasks)
        self.min_size, self.max_size, self.max_shapes = min_size, max_size, max_shapes

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> SyntheticSample:
        index = operator.index(index)
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for dataset of length {self.num_samples}")
        index %= self.num_samples
        task = self.tasks[index % len(self.tasks)]
        return make_sample(self.seed, index, task, self.min_size, self.max_size, self.max_shapes)


def vqa_record(sample: SyntheticSample, index: int) -> Record:
    """``sample`` as the one-turn conversation record a shard of it holds (key: the index, 8 digits)."""
    data = {"images": ["0.png"], "texts": [{"user": sample.question, "assistant": sample.answer}]}
    return Record(f"{index:08d}", "conversation", data, [sample.image])


def answer_space(task: str) -> tuple[str, ...]:
    """All possible answers of ``task``.

    Raises:
        ValueError: If ``task`` is unknown or open-ended (``caption``).
    """
    _check_task(task)
    if task not in ANSWERS:
        raise ValueError(f"task {task!r} has open-ended answers (no answer space)")
    return ANSWERS[task]
