"""``GenerationSamples``: the prompts cut from a training batch are exactly the generation prompts of its rows."""

from types import SimpleNamespace

import torch
from PIL import Image

from vlmkit.data import VLMCollator, VLMProcessor
from vlmkit.text import Turn
from vlmkit.training.generation_samples import GenerationSamples, generation_prompts, image_runs

QUESTION = [{"type": "image"}, "What color?"]


def _samples(vlm):
    processor = VLMProcessor.from_model(vlm, max_image_size=32, min_image_size=16)
    images = [
        Image.new("RGB", (32, 16), "red"),
        Image.new("RGB", (16, 32), "blue"),
        Image.new("RGB", (32, 32), "green"),
    ]
    two_images = [Turn("user", [*QUESTION, {"type": "image"}]), Turn("assistant", ["blue"])]
    rows = [
        ([images[0]], [Turn("user", QUESTION), Turn("assistant", ["red"])]),
        ([], [Turn("user", ["No image here?"]), Turn("assistant", ["yes it is"])]),
        ([images[1], images[2]], two_images),
    ]
    train = [processor(imgs, turns) for imgs, turns in rows]
    prompts = [processor(imgs, turns[:1], add_generation_prompt=True) for imgs, turns in rows]
    return train, prompts


def test_prompts_and_images_are_each_rows_own(tiny_vlm):
    train, expected = _samples(tiny_vlm)
    pad = tiny_vlm.tokenizer.pad_token_id
    batch = VLMCollator(pad, tiny_vlm.vision_encoder.patch_size)(train)
    assert image_runs(batch["input_ids"], tiny_vlm.image_token_id).tolist() == [1, 0, 2]
    prompts = generation_prompts(batch, tiny_vlm.image_token_id, pad, rows=3)
    reference = VLMCollator(pad, tiny_vlm.vision_encoder.patch_size, padding_side="left")(expected)
    assert torch.equal(prompts["input_ids"], reference["input_ids"])
    assert torch.equal(prompts["attention_mask"], reference["attention_mask"])
    assert torch.equal(prompts["pixel_values"], batch["pixel_values"])  # rows 0 and 2 own images 0, 1, 2
    assert [list(r) for r in prompts["images"]] == [[0], [], [1, 2]]
    answers = tiny_vlm.tokenizer.batch_decode(prompts["references"], skip_special_tokens=True)
    assert [a.strip() for a in answers] == ["red", "yes it is", "blue"]
    two = generation_prompts(batch, tiny_vlm.image_token_id, pad, rows=1)
    assert two["input_ids"].shape[0] == 1 and two["pixel_values"].shape[0] == 1
    assert generation_prompts({**batch, "position_ids": None}, tiny_vlm.image_token_id, pad, 3) is None  # packed


def test_the_callback_logs_a_table_and_images_during_fit_only(tiny_vlm):
    train, _ = _samples(tiny_vlm)
    batch = VLMCollator(tiny_vlm.tokenizer.pad_token_id, tiny_vlm.vision_encoder.patch_size)(train)
    texts, images = [], []
    experiment = SimpleNamespace(add_text=lambda *a: texts.append(a), add_image=lambda *a: images.append(a))
    trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn="fit"), global_step=7,
                              loggers=[SimpleNamespace(experiment=experiment)])  # fmt: skip
    module = SimpleNamespace(vlm=tiny_vlm, max_new_tokens=3, evaluator=None)
    callback = GenerationSamples(num_samples=2)
    callback.on_validation_batch_end(trainer, module, None, batch, batch_idx=1)  # not the first batch: nothing
    assert texts == []
    callback.on_validation_batch_end(trainer, module, None, batch, batch_idx=0)
    assert len(texts) == 1 and texts[0][0] == "samples/generations" and texts[0][2] == 7
    assert texts[0][1].count("\n") == 3  # header, rule, 2 rows
    assert "red" in texts[0][1] and [i[0] for i in images] == ["samples/image_0"]
    trainer.state.fn = "validate"
    callback.on_validation_batch_end(trainer, module, None, batch, batch_idx=0)
    assert len(texts) == 1
