import pytest
import torch

from vlmkit.data import SyntheticVQADataModule
from vlmkit.training.module import answer_loss

SMALL = {"min_size": 16, "max_size": 40, "max_image_size": 40, "min_image_size": 16}


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


def test_square_resize_mode_reaches_the_processor(tiny_vlm):
    dm = SyntheticVQADataModule(num_val=8, batch_size=8, resize_mode="square", **SMALL)
    dm.connect(tiny_vlm)
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixel_values"].shape[-2:] == (40, 40) and bool(batch["patch_mask"].all())
    preserved = SyntheticVQADataModule(num_val=8, batch_size=8, **SMALL)
    preserved.connect(tiny_vlm)
    assert not bool(next(iter(preserved.val_dataloader()))["patch_mask"].all())  # mixed aspect ratios pad
