import random

import pytest
import torch
from PIL import Image

from vlmkit.data.collate import VLMCollator
from vlmkit.data.formats import BadSample, Record
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.render import SampleRenderer, image_runs, truncate
from vlmkit.data.synthetic_sources import synthetic_record
from vlmkit.text.template import IGNORE_INDEX, ChatTemplate, SplitImageTokens, Turn

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


def tiny_renderer(vlm, max_length, **kwargs):
    encoder = vlm.vision_encoder
    processor = ImageProcessor(encoder.patch_size, encoder.image_mean, encoder.image_std, 32, 16)
    return SampleRenderer(vlm.tokenizer, processor, vlm.num_image_tokens, max_length, **kwargs)


def assert_fits_the_model(vlm, sample):
    """The model's own check: placeholders == visual tokens of the kept pixel tensors (raises otherwise)."""
    batch = VLMCollator(vlm.tokenizer.pad_token_id, vlm.vision_encoder.patch_size)([sample])
    mask = batch["input_ids"] == vlm.image_token_id
    vlm._check_placeholders(mask, batch.get("pixel_values"), batch.get("patch_mask"))
    return batch


def assert_no_partial_block(cut, spans):
    assert all(end <= cut or start >= cut for start, end in spans), (cut, spans)


@pytest.mark.parametrize("crop_markers", [True, False])
def test_truncation_keeps_split_and_unsplit_images_whole(tiny_vlm, crop_markers):
    # split, unsplit, split, unsplit images mixed in one document: every cut keeps whole blocks only
    template = ChatTemplate(tiny_vlm.tokenizer, train_on="all", crop_markers=crop_markers)
    layouts = [SplitImageTokens(4), 4, SplitImageTokens(4), 4]
    turns = [Turn("text", [seg for i in range(4) for seg in (f"picture {i}", {"type": "image"})] + ["the end"])]
    full = template.encode(turns, layouts)
    views = [5, 1, 5, 1]
    assert [sum(t == tiny_vlm.image_token_id for t in full.input_ids[s:e]) for s, e in full.image_spans] == [
        4 * v for v in views
    ]
    pixels = torch.zeros(sum(views), 3, 16, 16)  # 2x2 patches -> 4 perceiver tokens each
    for max_length in range(2, len(full.input_ids) + 1):
        cut, kept = truncate(full.input_ids, full.labels, max_length, tiny_vlm.image_token_id, full.image_spans)
        assert cut <= max_length
        assert_no_partial_block(cut, full.image_spans)
        assert kept == sum(end <= cut for _, end in full.image_spans)
        ids = torch.tensor([full.input_ids[:cut]])
        tiny_vlm._check_placeholders(ids == tiny_vlm.image_token_id, pixels[: sum(views[:kept])], None)
    if crop_markers:  # the split block opens with <fake> before "<row_1_col_1>": a cut there drops the fake too
        start, end = full.image_spans[0]
        assert full.input_ids[start] == template.fake_token_id
        assert truncate(full.input_ids, full.labels, start + 2, tiny_vlm.image_token_id, full.image_spans)[0] == start


@pytest.mark.integration
@pytest.mark.parametrize("crop_markers", [True, False])
def test_split_samples_truncate_to_whole_groups_that_fit_the_model(tiny_vlm, crop_markers):
    record = document()
    split = tiny_renderer(tiny_vlm, 10_000, image_splitting=1.0, crop_markers=crop_markers)
    full = split(record, random.Random(0))
    assert len(full["pixel_values"]) == 3 * 5
    full_ids = full["input_ids"].tolist()
    spans = split.processors[False].template.encode(*_turns_and_layouts(split, record)).image_spans
    checked_forward = False
    for max_length in range(2, len(full_ids) + 1):
        try:
            sample = tiny_renderer(tiny_vlm, max_length, image_splitting=1.0, crop_markers=crop_markers)(
                record, random.Random(0)
            )
        except BadSample as bad:  # no text left before the first image block
            assert bad.reason == "too_long"
            continue
        ids = sample["input_ids"].tolist()
        assert len(ids) <= max_length and ids == full_ids[: len(ids)]
        assert_no_partial_block(len(ids), spans)
        kept = 3 - sample["dropped_images"]
        assert len(sample["pixel_values"]) == 5 * kept
        for mine, reference in zip(sample["pixel_values"], full["pixel_values"]):
            assert torch.equal(mine, reference)
        batch = assert_fits_the_model(tiny_vlm, sample)
        if kept == 2 and not checked_forward:  # one real forward pass through a truncated split sample
            with torch.no_grad():
                logits = tiny_vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                                  batch["patch_mask"]).logits  # fmt: skip
            assert torch.isfinite(logits).all()
            checked_forward = True
    assert checked_forward


def _turns_and_layouts(renderer, record):
    from vlmkit.data.formats import to_turns

    turns, _ = to_turns(record, "caption", None)
    views = [renderer.image_processor.process(image, split_images=True) for image in record.images]
    return turns, [SplitImageTokens(renderer.num_image_tokens(v[-1].shape[1], v[-1].shape[2])) for v in views]


def test_image_splitting_draws_per_sample_in_training_and_follows_the_flag_in_evaluation(tiny_vlm):
    record = document(2)
    half = tiny_renderer(tiny_vlm, 10_000, image_splitting=0.5)
    rng = random.Random(0)
    counts = [len(half(record, rng)["pixel_values"]) for _ in range(200)]
    assert set(counts) == {2, 10}  # all images of a sample split together, crops + whole image
    assert 0.4 < counts.count(10) / len(counts) < 0.6
    split = tiny_renderer(tiny_vlm, 10_000, image_splitting=1.0)(record, random.Random(0))["pixel_values"]
    for i, image in enumerate(record.images):  # each image's 4 crops (row-major), then the image, in text order
        expected = half.image_processor.process(image, split_images=True)
        assert all(torch.equal(mine, ref) for mine, ref in zip(split[5 * i : 5 * i + 5], expected, strict=True))
    assert len(half(record)["pixel_values"]) == 2  # evaluation: image_splitting does not apply
    assert len(tiny_renderer(tiny_vlm, 10_000, image_splitting=1.0)(record)["pixel_values"]) == 2
    assert len(tiny_renderer(tiny_vlm, 10_000, eval_image_splitting=True)(record)["pixel_values"]) == 10
    never = tiny_renderer(tiny_vlm, 10_000)
    assert torch.equal(never(record, random.Random(5))["input_ids"], half(record)["input_ids"])
    with pytest.raises(ValueError, match="image_splitting"):
        tiny_renderer(tiny_vlm, 64, image_splitting=1.5)
