import random

import pytest

from vlmkit.data.formats import BadSample, Record, to_turns, validate
from vlmkit.text.template import Turn


@pytest.mark.parametrize(
    ("format", "data", "reason"),
    [
        ("pair", {"images": ["0.png"]}, "missing_field"),
        ("pair", {"images": ["0.png"], "caption": 3}, "missing_field"),
        ("pair", {"images": ["0.png", "1.png"], "caption": "x"}, "bad_layout"),
        ("pdf", {"text": "x"}, "missing_field"),
        ("interleaved", {"texts": ["a", None], "images": [None]}, "bad_layout"),
        ("interleaved", {"texts": ["a", "b"], "images": [None, "0.png"]}, "bad_layout"),
        ("interleaved", {"texts": [None], "images": ["0.png"]}, "missing_field"),
        ("conversation", {"images": [], "texts": []}, "missing_field"),
        ("conversation", {"images": [], "texts": [{"user": "q"}]}, "missing_field"),
        ("conversation", {"images": [None], "texts": [{"user": "q", "assistant": "a"}]}, "bad_layout"),
        ("video", {"images": []}, "unknown_format"),
        ("pair", ["not", "an", "object"], "bad_layout"),
    ],
)
def test_invalid_samples_raise_with_a_reason_and_the_key(format, data, reason):
    with pytest.raises(BadSample) as caught:
        validate(format, data, key="shard-3:000042")
    assert caught.value.reason == reason
    assert "000042" in str(caught.value) or reason == "unknown_format"


def test_valid_samples_return_their_image_refs_in_text_order():
    assert validate("interleaved", {"texts": ["a", None, "b", None], "images": [None, "1.jpg", None, "0.png"]}) == [
        "1.jpg",
        "0.png",
    ]
    assert validate("conversation", {"images": [], "texts": [{"user": "q", "assistant": "a"}]}) == []


def test_turns_of_each_format():
    image = {"type": "image"}
    doc = Record("k", "interleaved", {"texts": ["a", None, "b"], "images": [None, "0.png", None]}, [object()])
    assert to_turns(doc) == ([Turn("text", ["a", image, "b"])], False)
    pair = Record("k", "pair", {"images": ["0.png"], "caption": "c", "synthetic_caption": "s"}, [object()])
    assert to_turns(pair, "synthetic_caption") == ([Turn("text", [image, "s"])], False)
    with pytest.raises(BadSample, match="synthetic_caption"):
        to_turns(Record("k", "pair", {"images": ["0.png"], "caption": "c"}, [object()]), "synthetic_caption")
    chat = Record("k", "conversation", {"images": ["0.png", "1.png"], "texts": [{"user": "q", "assistant": "a"}]})
    chat.images = [object(), object()]
    assert to_turns(chat) == ([Turn("user", [image, image, "q"]), Turn("assistant", ["a"])], True)


def test_turn_shuffling_is_seeded_and_keeps_images_first():
    pairs = [{"user": f"q{i}", "assistant": f"a{i}"} for i in range(6)]
    record = Record("k", "conversation", {"images": ["0.png"], "texts": pairs}, [object()])
    orders = set()
    for seed in range(5):
        turns, _ = to_turns(record, rng=random.Random(seed))
        assert turns == to_turns(record, rng=random.Random(seed))[0]
        assert turns[0].content[0] == {"type": "image"} and all(t.content[0] != {"type": "image"} for t in turns[1:])
        questions = [t.content[-1] for t in turns if t.role == "user"]
        answers = [t.content[0] for t in turns if t.role == "assistant"]
        assert [q[1:] for q in questions] == [a[1:] for a in answers]  # pairs stay together
        orders.add(tuple(questions))
    assert len(orders) > 1
    assert [t.content[-1] for t in to_turns(record)[0] if t.role == "user"] == [f"q{i}" for i in range(6)]
