import random

import pytest
import torch
from PIL import Image

from vlmkit.data.formats import BadSample, Record
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.render import SampleRenderer, image_runs, truncate
from vlmkit.data.sources import synthetic_record
from vlmkit.text.template import IGNORE_INDEX

TOKENS_PER_IMAGE = 5


def renderer(tokenizer, max_length, **kwargs):
    return SampleRenderer(
        tokenizer,
        ImageProcessor(8, max_image_size=32, min_image_size=16),
        lambda h, w: TOKENS_PER_IMAGE,
        max_length,
        **kwargs,
    )


def document(num_images=3):
    texts, images = [], []
    for i in range(num_images):
        texts += [f"picture {i} shows a red circle", None]
        images += [None, f"{i}.png"]
    data = {"texts": [*texts, "the end"], "images": [*images, None]}
    return Record("doc", "interleaved", data, [Image.new("RGB", (24, 16), (i * 60, 0, 0)) for i in range(num_images)])


def test_truncate_never_cuts_an_image_block():
    # bos a <fake> img img <fake> img img <fake> b  (the middle fake is shared)
    I, F = 9, 8  # noqa: E741
    ids = [1, 2, F, I, I, F, I, I, F, 3]
    assert image_runs(ids, I) == [(3, 5), (6, 8)]
    assert truncate(ids, ids, 10, I) == (10, 2)
    assert truncate(ids, ids, 9, I) == (9, 2)
    assert truncate(ids, ids, 8, I) == (6, 1)  # second image does not fit: keep the shared fake closing the first
    assert truncate(ids, ids, 5, I) == (2, 0)  # cut before the first image's opening fake
    assert truncate(ids, ids, 3, I) == (2, 0)
    assert truncate(ids, ids, 2, I) == (2, 0)


@pytest.mark.parametrize("max_length", range(8, 60, 3))
def test_placeholders_always_match_the_kept_images(tokenizer, max_length):
    sample = renderer(tokenizer, max_length)(document())
    ids = sample["input_ids"].tolist()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    fake_id = tokenizer.convert_tokens_to_ids("<fake_token_around_image>")
    assert len(ids) <= max_length
    assert ids.count(image_id) == TOKENS_PER_IMAGE * len(sample["pixel_values"])
    assert sample["dropped_images"] == 3 - len(sample["pixel_values"])
    for start, end in image_runs(ids, image_id):  # every kept block is whole: <fake> <image>*n <fake>
        assert end - start == TOKENS_PER_IMAGE and ids[start - 1] == fake_id and ids[end] == fake_id
    full = renderer(tokenizer, 10_000)(document())
    assert ids == full["input_ids"].tolist()[: len(ids)]  # a prefix of the untruncated sample
    for kept, original in zip(sample["pixel_values"], full["pixel_values"]):
        assert torch.equal(kept, original)


def test_drop_sample_policy_and_nothing_left_to_train(tokenizer):
    with pytest.raises(BadSample) as caught:
        renderer(tokenizer, 20, truncation="drop_sample")(document())
    assert caught.value.reason == "too_long"
    image_first = Record("k", "interleaved", {"texts": [None, "a caption"], "images": ["0.png", None]})
    image_first.images = [Image.new("RGB", (16, 16))]
    with pytest.raises(BadSample, match="nothing to train on"):
        renderer(tokenizer, 6)(image_first)  # the image block does not fit and no text comes before it


def test_conversations_train_on_answers_only_and_pretraining_on_all_text(tokenizer):
    chat = synthetic_record("conversation", 0, 1)
    assert chat.images
    sample = renderer(tokenizer, 512)(chat)
    labelled = [t for t, label in zip(sample["input_ids"].tolist(), sample["labels"].tolist()) if label != IGNORE_INDEX]
    answers = [t["assistant"] for t in chat.data["texts"]]
    text = tokenizer.decode(labelled)
    assert all(answer in text for answer in answers) and "User" not in text and "?" not in text
    pdf = renderer(tokenizer, 512)(synthetic_record("pdf", 0, 0))
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    text_tokens = [t for t in pdf["input_ids"].tolist()[1:] if t != image_id and t < len(tokenizer) - 10]
    assert sum(label != IGNORE_INDEX for label in pdf["labels"].tolist()) >= len(text_tokens)


def test_text_only_conversations_and_turn_shuffling(tokenizer):
    text_only = next(r for r in (synthetic_record("conversation", 0, i) for i in range(50)) if not r.images)
    sample = renderer(tokenizer, 512)(text_only)
    assert sample["pixel_values"] == [] and (sample["labels"] != IGNORE_INDEX).any()
    multi = next(r for r in (synthetic_record("conversation", 0, i) for i in range(50)) if len(r.data["texts"]) > 1)
    orders = {tuple(renderer(tokenizer, 512)(multi, random.Random(s))["input_ids"].tolist()) for s in range(8)}
    assert len(orders) == 2
    assert len({tuple(renderer(tokenizer, 512, shuffle_turns=False)(multi, random.Random(s))["input_ids"].tolist())
                for s in range(8)}) == 1  # fmt: skip
