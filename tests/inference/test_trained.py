"""``load_trained``: a Lightning checkpoint, a save_pretrained folder, a ``vlmkit export`` folder, one-line errors."""

import json

import pytest
import torch
import yaml
from tiny_models import tiny_composition

from vlmkit.errors import CheckpointError, CheckpointNotFoundError, UserInputError
from vlmkit.export import export
from vlmkit.inference import load_trained
from vlmkit.model import VisionLanguageModel

DATA = {"class_path": "vlmkit.data.SyntheticVQADataModule", "max_image_size": 64, "min_image_size": 32,
        "eval_image_splitting": False, "_instantiator": "lightning.pytorch.cli.instantiate_module"}  # fmt: skip


def lightning_checkpoint(vlm, path, composition=None):
    """What ``vlmkit fit`` writes for ``vlm``: its weights under ``vlm.``, the recipe in the hyperparameters."""
    hparams = {"vlm": composition or vlm.config, "max_new_tokens": 16, "_instantiator": "lightning...instantiate"}
    state = {f"vlm.{k}": v for k, v in vlm.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "datamodule_hyper_parameters": DATA}, path)
    return path


def _ids(vlm):
    ids = torch.cat([torch.arange(5, 9), torch.full((vlm.num_image_tokens(16, 16),), vlm.image_token_id)])
    return ids[None], torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _logits(vlm):
    ids, pixels = _ids(vlm)
    with torch.no_grad():
        return vlm.eval()(ids, None, pixels).logits


def test_a_lightning_checkpoint_is_rebuilt_from_its_hyperparameters(tmp_path):
    torch.manual_seed(0)
    vlm = VisionLanguageModel.from_config(tiny_composition())
    path = lightning_checkpoint(vlm, tmp_path / "last.ckpt")
    torch.manual_seed(1)
    trained = load_trained(path)
    assert trained.kind == "lightning"
    assert torch.equal(_logits(trained.vlm), _logits(vlm))
    assert trained.processor == {"max_image_size": 64, "min_image_size": 32, "split_images": False}
    assert trained.recipe["model"]["vlm"]["class_path"] == "vlmkit.model.VisionLanguageModel"


def test_a_checkpoint_without_a_composition_says_how_to_rebuild_it(tmp_path):
    torch.save({"state_dict": {}, "hyper_parameters": {"max_new_tokens": 16}}, tmp_path / "py.ckpt")
    with pytest.raises(CheckpointError, match="built in Python.*vlmkit export --config"):
        load_trained(tmp_path / "py.ckpt")


def test_a_save_pretrained_folder_brings_its_processor_settings(tmp_path):
    vlm = VisionLanguageModel.from_config(tiny_composition())
    vlm.save_pretrained(tmp_path, processor={"max_image_size": 48, "split_images": True}, metrics={"acc": 0.5})
    trained = load_trained(tmp_path)
    assert trained.kind == "pretrained" and trained.metrics == {"acc": 0.5}
    assert trained.processor == {"max_image_size": 48, "split_images": True}
    assert torch.equal(_logits(trained.vlm), _logits(vlm))


@pytest.mark.parametrize("adapters_only", [False, True], ids=["merged", "adapters"])
def test_a_vlmkit_export_folder_loads_with_its_recipe(tmp_path, adapters_only):
    composition = tiny_composition(train_language_model="lora")
    torch.manual_seed(0)
    vlm = VisionLanguageModel.from_config(composition)
    with torch.no_grad():
        for name, param in vlm.named_parameters():
            if "lora_B" in name:
                param.add_(0.05 * torch.randn_like(param))
    expected = _logits(vlm)
    torch.manual_seed(0)  # the adapters-only export loads onto the recipe's base weights: the same init here
    export(vlm, None, tmp_path, adapters_only=adapters_only)
    recipe = {"model": {"vlm": composition}, "data": {"class_path": "x", "init_args": {"max_image_size": 64}}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    trained = load_trained(tmp_path)
    assert trained.kind == "export" and trained.processor == {"max_image_size": 64}
    torch.testing.assert_close(_logits(trained.vlm), expected, atol=1e-5, rtol=1e-5)  # merged: W + BA summed once


def test_missing_and_unknown_paths_are_one_line(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="checkpoint not found: .*nothing.ckpt"):
        load_trained(tmp_path / "nothing.ckpt")
    with pytest.raises(UserInputError, match="vlmkit cannot load: expected a Lightning .ckpt"):
        load_trained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(UserInputError, match="'llava' model; vlmkit loads idefics2, idefics3 and smolvlm"):
        load_trained(tmp_path)


def test_weights_that_do_not_fit_are_a_checkpoint_error(tmp_path):
    VisionLanguageModel.from_config(tiny_composition()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="cannot load .*weights not found"):
        load_trained(tmp_path)
