import pytest
import torch

from vlmkit.data import SyntheticVQADataModule
from vlmkit.training.module import answer_loss

SMALL = {"min_size": 16, "max_size": 40, "max_image_size": 40, "min_image_size": 16}
SHARD = {"max_image_size": 40, "min_image_size": 16, "max_length": 4096}


def test_half_of_training_samples_are_split_deterministically(tiny_vlm):
    dm = SyntheticVQADataModule(num_train=200, image_splitting=0.5, upscale_probability=0.5, **SMALL)
    dm.connect(tiny_vlm)
    train = dm.dataset("train")
    views = [len(train[i]["pixel_values"]) for i in range(200)]
    assert set(views) == {1, 5} and 0.4 < views.count(5) / 200 < 0.6
    again = dm.dataset("train")[7]
    assert all(torch.equal(a, b) for a, b in zip(train[7]["pixel_values"], again["pixel_values"]))
    assert all(len(dm.dataset("val")[i]["pixel_values"]) == 1 for i in range(20))  # evaluation: off by default


def test_splitting_on_or_off_at_inference_with_the_same_weights(tiny_vlm):
    for split in (False, True):
        dm = SyntheticVQADataModule(num_val=4, batch_size=4, eval_image_splitting=split, **SMALL)
        dm.connect(tiny_vlm)
        batch = next(iter(dm.val_dataloader()))
        assert batch["pixel_values"].shape[0] == (20 if split else 4)
        placeholders = int((batch["input_ids"] == tiny_vlm.image_token_id).sum())
        assert placeholders == (20 if split else 4) * 4  # 4 perceiver latents per view
        out = tiny_vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"])
        assert torch.isfinite(answer_loss(out.logits, batch["labels"]))


def test_splits_use_different_seeds_and_answers_are_kept(tiny_vlm):
    dm = SyntheticVQADataModule(num_train=8, num_val=8, **SMALL)
    dm.connect(tiny_vlm)
    train, val = dm.dataset("train"), dm.dataset("val")
    assert train[0]["question"] != val[0]["question"] or not torch.equal(
        train[0]["pixel_values"][0], val[0]["pixel_values"][0]
    )
    assert {"answer", "question", "task"} <= set(val[0])
    prompt = dm.dataset("predict")[0]
    assert tiny_vlm.tokenizer.decode(prompt["input_ids"]).endswith("Assistant:")


def test_dataloaders_need_a_model():
    with pytest.raises(RuntimeError, match="connect"):
        SyntheticVQADataModule().train_dataloader()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": ["colour"]}, "colour"),
        ({"val_tasks": ["nope"]}, "nope"),
        ({"image_splitting": 1.5}, "image_splitting"),
        ({"num_train": -1}, "num_samples"),
        ({"max_shapes": 0}, "max_shapes"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticVQADataModule(**kwargs)


@pytest.mark.parametrize("image_splitting", [0.0, 0.5, 1.0])
def test_a_synthetic_sample_renders_the_same_through_a_shard(tiny_vlm, tmp_path, image_splitting):
    """One rendering path: the synthetic questions and a shard of the same samples give the same ids, labels and
    pixels, with the same random draws (splitting, then upscaling) from the same per-sample generator."""
    import io
    import random

    from vlmkit.data import MixtureDataModule, ShardSource
    from vlmkit.data.shards import ShardItem, write_shards

    dm = SyntheticVQADataModule(num_train=6, image_splitting=image_splitting, upscale_probability=0.5, **SMALL)
    dm.connect(tiny_vlm)
    train = dm.dataset("train")
    items = []
    for index in range(len(train)):
        sample, png = train.samples[index], io.BytesIO()
        sample.image.save(png, format="PNG")  # lossless: the shard holds the same pixels
        data = {"images": ["0.png"], "texts": [{"user": sample.question, "assistant": sample.answer}]}
        items.append(ShardItem(f"{index:08d}", data, [("0.png", png.getvalue())]))
    write_shards(items, tmp_path, "conversation")
    source = ShardSource(str(tmp_path), "conversation", shuffle_buffer=0, image_splitting=image_splitting, **SHARD)
    mixture = MixtureDataModule(sources=[source], upscale_probability=0.5)
    mixture.connect(tiny_vlm)
    renderer = mixture.renderer(source, train=True)
    records = list(source.records(0, 1, seed=0, endless=False))
    assert len(records) == len(train)
    for index, record in enumerate(records):
        mine = train[index]
        theirs = renderer(record, random.Random(f"vlmkit.augment:{dm.hparams.seed}:{index}"))  # the same draws
        assert torch.equal(mine["input_ids"], theirs["input_ids"]) and torch.equal(mine["labels"], theirs["labels"])
        assert len(mine["pixel_values"]) == len(theirs["pixel_values"])
        assert all(torch.equal(a, b) for a, b in zip(mine["pixel_values"], theirs["pixel_values"]))


def test_square_resize_mode_reaches_the_processor(tiny_vlm):
    dm = SyntheticVQADataModule(num_val=8, batch_size=8, resize_mode="square", **SMALL)
    dm.connect(tiny_vlm)
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixel_values"].shape[-2:] == (40, 40) and bool(batch["patch_mask"].all())
    preserved = SyntheticVQADataModule(num_val=8, batch_size=8, **SMALL)
    preserved.connect(tiny_vlm)
    assert not bool(next(iter(preserved.val_dataloader()))["patch_mask"].all())  # mixed aspect ratios pad
