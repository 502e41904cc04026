"""Fine-tune imported Idefics2 / SmolVLM checkpoints with `vlmkit fit`, export them with `vlmkit export-idefics2/3`."""

import pytest
import torch
import yaml
from tiny_idefics2 import save_tiny_idefics2
from transformers import Idefics2ForConditionalGeneration

from vlmkit.cli import build_cli, main
from vlmkit.interop import from_idefics2_inputs
from vlmkit.training.checkpoints import load_model_weights


@pytest.mark.integration
def test_fit_from_imported_idefics2_then_export(tmp_path):
    source = tmp_path / "idefics2"
    _, processor = save_tiny_idefics2(source)
    recipe = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 3,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "logger": False,
            "enable_progress_bar": False,
            "default_root_dir": str(tmp_path / "run"),
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}
            ],
        },
        "model": {
            "vlm": {
                "class_path": "vlmkit.interop.import_idefics2",
                "init_args": {
                    "path_or_name": "given/on/the/command/line",
                    "train_language_model": "lora",
                    "neftune_alpha": 5.0,
                },
            },
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
        },
        "data": {
            "class_path": "vlmkit.data.SyntheticVQADataModule",
            "init_args": {
                "tasks": ["color"],
                "num_train": 12,
                "num_val": 4,
                "batch_size": 4,
                "min_size": 24,
                "max_size": 48,
                "max_image_size": 48,
                "min_image_size": 24,
            },
        },
    }
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    recipe_args = ["--config", str(config), "--model.vlm.init_args.path_or_name", str(source)]  # as the README shows
    main(["fit", *recipe_args])
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))

    output = tmp_path / "exported"
    main(["export-idefics2", *recipe_args, "--ckpt_path", str(checkpoint), "--output_dir", str(output)])
    exported = Idefics2ForConditionalGeneration.from_pretrained(output).eval()
    original = Idefics2ForConditionalGeneration.from_pretrained(source).eval()

    trained = build_cli([*recipe_args, "--trainer.logger", "false"], run=False).model.vlm.eval()
    load_model_weights(trained, checkpoint)  # with its LoRA layers, unmerged
    batch = processor(images=[[_image()]], text=["User:<image>What color is the shape?"], return_tensors="pt")
    with torch.no_grad():
        pixel_values, patch_mask = from_idefics2_inputs(batch["pixel_values"], batch["pixel_attention_mask"], 8)
        expected = trained(batch["input_ids"], batch["attention_mask"], pixel_values, patch_mask).logits
        got = exported(**batch).logits
        before = original(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert (got - before).abs().max() > 1e-3  # training changed the model


def _image():
    from PIL import Image

    return Image.new("RGB", (40, 32), (200, 30, 30))


@pytest.mark.integration
def test_fit_from_imported_smolvlm_on_tiled_images_then_export(tmp_path):
    """`vlmkit fit` tiles images as the checkpoint's processor (its tile_size); export-idefics3 writes it back."""
    from tiny_idefics3 import SPECS, save_tiny
    from transformers import AutoProcessor, SmolVLMForConditionalGeneration

    from vlmkit.interop import from_idefics3_inputs

    source = tmp_path / "smolvlm"
    save_tiny("smolvlm", source)
    spec = SPECS["smolvlm"]
    recipe = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 2,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "logger": False,
            "enable_progress_bar": False,
            "default_root_dir": str(tmp_path / "run"),
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}
            ],
        },
        "model": {
            "vlm": {
                "class_path": "vlmkit.interop.import_idefics3",
                "init_args": {"path_or_name": str(source), "train_language_model": "lora"},
            },
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
        },
        "data": {
            "class_path": "vlmkit.data.SyntheticVQADataModule",
            "init_args": {
                "tasks": ["color"],
                "num_train": 4,
                "num_val": 2,
                "batch_size": 2,
                "min_size": 24,
                "max_size": 64,
                "max_image_size": spec["longest"],
                "image_splitting": 1.0,
            },
        },  # fmt: skip
    }
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    main(["fit", "--config", str(config)])
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    output = tmp_path / "exported"
    main(["export-idefics3", "--config", str(config), "--ckpt_path", str(checkpoint), "--output_dir", str(output),
          "--family", "smolvlm", "--max_image_size", str(spec["longest"])])  # fmt: skip
    exported = SmolVLMForConditionalGeneration.from_pretrained(output).eval()
    processor = AutoProcessor.from_pretrained(output)
    assert processor.image_processor.max_image_size == {"longest_edge": spec["tile"]}

    trained = build_cli(["--config", str(config), "--trainer.logger", "false"], run=False).model.vlm.eval()
    load_model_weights(trained, checkpoint)
    batch = processor(images=[[_image()]], text=["User:<image>What color is the shape?"], return_tensors="pt")
    with torch.no_grad():
        pixel_values, patch_mask = from_idefics3_inputs(batch["pixel_values"], batch["pixel_attention_mask"], 8)
        expected = trained(batch["input_ids"], batch["attention_mask"], pixel_values, patch_mask).logits
        got = exported(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
