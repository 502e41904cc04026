"""Tests for vlmkit.data.synthetic."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from vlmkit.data import synthetic
from vlmkit.data.synthetic import (
    COLORS,
    SHAPES,
    TASKS,
    WORDS,
    SyntheticSample,
    SyntheticVQADataset,
    answer_space,
    make_sample,
    vocabulary_corpus,
)

SHAPE_TASKS = ("color", "shape", "count", "position")


def _with_layout(seed: int, index: int, task: str, min_size: int = 32, max_size: int = 96):
    rng = synthetic._rng(seed, index, task, min_size, max_size)
    return synthetic._shapes_sample(rng, task, min_size, max_size)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_and_index_give_identical_samples(task):
    a, b = make_sample(3, 17, task), make_sample(3, 17, task)
    assert a.image.tobytes() == b.image.tobytes() and a.image.size == b.image.size
    assert (a.question, a.answer, a.caption, a.task) == (b.question, b.answer, b.caption, b.task)


def test_dataset_access_order_does_not_matter():
    ds = SyntheticVQADataset(12, seed=5, tasks=TASKS)
    forward = [ds[i].image.tobytes() for i in range(12)]
    backward = [ds[i].image.tobytes() for i in reversed(range(12))][::-1]
    assert forward == backward
    assert ds[-1].image.tobytes() == ds[11].image.tobytes()


def test_different_seeds_give_different_data():
    a = [make_sample(0, i, "color").image.tobytes() for i in range(8)]
    b = [make_sample(1, i, "color").image.tobytes() for i in range(8)]
    assert a != b and sum(x != y for x, y in zip(a, b)) >= 6


def test_dataset_round_robin_tasks_and_sample_type():
    ds = SyntheticVQADataset(10, seed=0, tasks=("count", "reading"))
    assert len(ds) == 10
    samples = [ds[i] for i in range(10)]
    assert all(isinstance(s, SyntheticSample) and s.image.mode == "RGB" for s in samples)
    assert [s.task for s in samples] == ["count", "reading"] * 5


def test_color_answers_match_pixels():
    for i in range(100):
        sample, shapes = _with_layout(0, i, "color")
        kind = re.fullmatch(r"What color is the (\w+)\?", sample.question).group(1)
        matching = [s for s in shapes if s.kind == kind]
        assert len(matching) == 1 and matching[0].color == sample.answer
        assert sample.image.getpixel(matching[0].center) == COLORS[sample.answer]


def test_shape_answers_match_layout_and_pixels():
    for i in range(100):
        sample, shapes = _with_layout(1, i, "shape")
        color = re.fullmatch(r"Which shape is (\w+)\?", sample.question).group(1)
        matching = [s for s in shapes if s.color == color]
        assert len(matching) == 1 and matching[0].kind == sample.answer
        assert sample.image.getpixel(matching[0].center) == COLORS[color]


def test_count_answers_match_layout():
    for i in range(100):
        sample, shapes = _with_layout(2, i, "count")
        assert sample.answer == str(len(shapes))
        colors_seen = {c for _, c in sample.image.getcolors(maxcolors=10_000)}
        assert {COLORS[s.color] for s in shapes} <= colors_seen


def test_position_targets_lie_wholly_in_one_half():
    for i in range(100):
        sample, shapes = _with_layout(3, i, "position")
        color, kind = re.fullmatch(r"Is the (\w+) (\w+) on the left or the right\?", sample.question).groups()
        matching = [s for s in shapes if (s.color, s.kind) == (color, kind)]
        assert len(matching) == 1
        x0, _, x1, _ = matching[0].box
        half = sample.image.width / 2
        assert (x1 < half) if sample.answer == "left" else (x0 > half)
        assert sample.image.getpixel(matching[0].center) == COLORS[color]


def test_shapes_do_not_overlap_and_are_big_enough():
    for i in range(60):
        sample, shapes = _with_layout(4, i, SHAPE_TASKS[i % 4])
        short = min(sample.image.size)
        for j, a in enumerate(shapes):
            assert a.box[2] - a.box[0] + 1 >= short / 4
            for b in shapes[j + 1 :]:
                assert synthetic._apart(a.box, b.box)


def test_caption_lists_shapes_left_to_right():
    sample, shapes = _with_layout(0, 0, "count")
    ordered = sorted(shapes, key=lambda s: s.center)
    assert sample.caption == synthetic._caption(ordered)
    assert re.match(f"an? {ordered[0].color} {ordered[0].kind}", sample.caption) and sample.caption.endswith(".")
    one_orange = synthetic._Shape("circle", "orange", (0, 0, 9, 9))
    two = [synthetic._Shape("square", "red", (20, 0, 29, 9)), one_orange]
    assert synthetic._caption(two) == "an orange circle and a red square."


def test_image_sizes_within_bounds_and_aspect_ratios_vary():
    sizes = [make_sample(0, i, SHAPE_TASKS[i % 4]).image.size for i in range(200)]
    assert all(32 <= w <= 96 and 32 <= h <= 96 and 0.5 <= w / h <= 2 for w, h in sizes)
    ratios = [w / h for w, h in sizes]
    assert min(ratios) < 0.75 and max(ratios) > 1.33 and len(set(sizes)) > 50
    small = [make_sample(0, i, "color", min_size=20, max_size=24).image.size for i in range(30)]
    assert all(20 <= w <= 24 and 20 <= h <= 24 for w, h in small)


def test_reading_images():
    samples = [make_sample(0, i, "reading", max_size=40) for i in range(100)]
    assert all(24 <= s.image.height <= 40 and s.image.width <= 80 for s in samples)
    assert len({s.image.width for s in samples}) > 5
    for s in samples:
        assert s.answer in WORDS and s.caption == f'the word "{s.answer}".'
        darkest = min(sum(c) for _, c in s.image.getcolors(maxcolors=100_000))
        assert darkest <= 3 * 100  # dark text was drawn


@pytest.mark.parametrize("task", [t for t in TASKS if t != "caption"])
def test_answer_distribution_is_spread(task):
    counts = Counter(make_sample(7, i, task).answer for i in range(600))
    assert set(counts) == set(answer_space(task))
    limit = {"color": 0.3, "shape": 0.45, "count": 0.45, "position": 0.6, "reading": 0.1}[task]
    assert counts.most_common(1)[0][1] / 600 < limit


def test_vocabulary_covers_everything_emitted():
    vocab = {w for text in vocabulary_corpus() for w in _words(text)}
    ds = SyntheticVQADataset(500, seed=11, tasks=TASKS)
    for i in range(500):
        s = ds[i]
        for text in (s.question, s.answer, s.caption):
            assert set(_words(text)) <= vocab, text
    assert set(WORDS) | set(COLORS) | set(SHAPES) <= vocab


def test_answer_space():
    assert answer_space("count") == ("1", "2", "3")
    assert answer_space("position") == ("left", "right")
    assert set(answer_space("color")) == set(COLORS) and set(answer_space("shape")) == set(SHAPES)


@pytest.mark.parametrize(
    ("call", "exc", "name"),
    [
        (lambda: make_sample(0, 0, "size"), ValueError, "task"),
        (lambda: answer_space("nope"), ValueError, "task"),
        (lambda: make_sample(0, 0, "color", min_size=64, max_size=32), ValueError, "min_size"),
        (lambda: make_sample(0, 0, "color", min_size=4), ValueError, "min_size"),
        (lambda: SyntheticVQADataset(-1), ValueError, "num_samples"),
        (lambda: SyntheticVQADataset(5, tasks=()), ValueError, "tasks"),
        (lambda: SyntheticVQADataset(5, tasks=("color", "bogus")), ValueError, "task"),
        (lambda: SyntheticVQADataset(5, min_size=100), ValueError, "min_size"),
        (lambda: SyntheticVQADataset(5)[5], IndexError, "index"),
        (lambda: SyntheticVQADataset(5)[-6], IndexError, "index"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


def test_unknown_task_error_lists_valid_tasks():
    with pytest.raises(ValueError, match="reading"):
        make_sample(0, 0, "colour")


def test_caption_task_answers_with_the_caption():
    for i in range(20):
        sample, shapes = _with_layout(2, i, "caption")
        assert sample.question == "Describe the image." and sample.answer == sample.caption
        assert all(f"{shape.color} {shape.kind}" in sample.answer for shape in shapes)
    with pytest.raises(ValueError, match="open-ended"):
        answer_space("caption")


def test_max_shapes_bounds_the_number_of_shapes():
    assert {make_sample(0, i, "count", max_shapes=1).answer for i in range(50)} == {"1"}
    assert {make_sample(0, i, "count", max_shapes=2).answer for i in range(100)} == {"1", "2"}
    ds = SyntheticVQADataset(40, tasks=["color", "shape", "position"], max_shapes=1)
    assert all(ds[i].caption.count(" and ") == 0 and ds[i].caption.count(",") == 0 for i in range(40))
    with pytest.raises(ValueError, match="max_shapes"):
        SyntheticVQADataset(4, max_shapes=4)


def test_make_scene_gives_the_sample_of_make_sample_and_its_layout():
    for task in ("color", "count", "caption", "position"):
        sample, objects = synthetic.make_scene(4, 9, task, 32, 64, 3)
        same = make_sample(4, 9, task, 32, 64, 3)
        assert sample.image.tobytes() == same.image.tobytes() and sample.question == same.question
        assert 1 <= len(objects) <= 3
        for kind, color, (x0, y0, x1, y1) in objects:
            assert kind in SHAPES and color in COLORS
            assert 0 <= x0 < x1 < sample.image.width and 0 <= y0 < y1 < sample.image.height
            pixel = sample.image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2 + (y1 - y0) // 4))
            assert pixel == COLORS[color]  # the box holds the drawn shape
        if task == "count":
            assert sample.answer == str(len(objects))
    with pytest.raises(ValueError, match="reading"):
        synthetic.make_scene(0, 0, "reading")


def test_noisy_alt_texts_are_partly_wrong_or_irrelevant_and_deterministic():
    import random

    caption = "a red circle, a blue square and an orange triangle."
    clean = {("red", "circle"), ("blue", "square"), ("orange", "triangle")}
    assert synthetic.noisy_alt_text(caption, random.Random(0), 0.0) == "red circle blue square orange triangle"
    texts = [synthetic.noisy_alt_text(caption, random.Random(i), 0.5) for i in range(300)]
    assert texts == [synthetic.noisy_alt_text(caption, random.Random(i), 0.5) for i in range(300)]
    pairs = [set(zip(_words(t)[::1], _words(t)[1:])) for t in texts]
    wrong = sum(any(p[0] in COLORS and p[1] in SHAPES and p not in clean for p in ps) for ps in pairs)
    irrelevant = sum(any(w in WORDS for w in _words(t)) for t in texts)
    exact = sum(t == "red circle blue square orange triangle" for t in texts)
    assert 0.3 < wrong / 300 < 0.9 and 0.3 < irrelevant / 300 < 0.7 and exact < 100
    with pytest.raises(ValueError, match="noise"):
        synthetic.noisy_alt_text(caption, random.Random(0), 1.5)
