"""``vlmkit export``: LoRA checkpoint -> merged plain weights, or adapters alone, both reproducing the logits."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmkit.adapters import has_adapters, load_trainable
from vlmkit.cli import build_cli, main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ["--config", str(ROOT / "recipes/quickstart.yaml"), "--config", str(ROOT / "recipes/finetune/lora.yaml")]
SMALL = ["--data.init_args.num_train=8", "--data.init_args.num_val=4", "--data.init_args.batch_size=4"]
SMALL += ["--trainer.enable_progress_bar=false", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    cli = build_cli(["fit", *RECIPE, *SMALL, "--trainer.max_steps=2", f"--trainer.default_root_dir={root}"])
    cli.model.eval()
    batch = next(iter(cli.datamodule.val_dataloader()))
    with torch.no_grad():
        logits = cli.model(batch).logits
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", batch, logits


def _fresh(*overrides):
    cli = build_cli([*RECIPE, *SMALL, "--trainer.logger=false", *overrides], run=False)
    return cli.model.eval()


@pytest.mark.integration
def test_merged_export_loads_without_adapters_and_reproduces_logits(trained, tmp_path):
    ckpt, batch, logits = trained
    main(["export", *RECIPE, "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path)])
    state = load_file(tmp_path / "model.safetensors")
    assert not any("lora_" in k or "base_layer" in k for k in state)
    plain = _fresh("--model.vlm.init_args.train_vision_encoder=full", "--model.vlm.init_args.train_language_model=full")
    assert not has_adapters(plain)
    plain.vlm.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(plain(batch).logits, logits, atol=1e-4, rtol=1e-4)
    assert (tmp_path / "recipe.yaml").is_file()


@pytest.mark.integration
def test_adapters_only_export_reproduces_logits_on_the_base(trained, tmp_path):
    ckpt, batch, logits = trained
    main(["export", *RECIPE, "--ckpt_path", str(ckpt), "--output_dir", str(tmp_path), "--adapters_only"])
    state = load_file(tmp_path / "trainable.safetensors")
    assert any("lora_A" in k for k in state) and not any(k.endswith("base_layer.weight") for k in state)
    base = _fresh()  # same seed: the same random base weights as the trained run started from
    with torch.no_grad():
        assert not torch.allclose(base(batch).logits, logits, atol=1e-4)
    load_trainable(base.vlm, tmp_path / "trainable.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(base(batch).logits, logits, atol=1e-5, rtol=1e-5)
