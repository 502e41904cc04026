"""End-to-end: the quickstart recipe through the CLI, checkpoint reload, validate and predict."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlmkit.cli import build_cli
from vlmkit.training import VLMModule

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")
SMALL = [
    "--data.init_args.num_train=16",
    "--data.init_args.num_val=8",
    "--data.init_args.num_predict=4",
    "--data.init_args.batch_size=4",
]


FIT = ["fit", "--config", QUICKSTART, *SMALL, "--trainer.max_steps=4", "--trainer.val_check_interval=2"]
FIT += ["--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("quickstart")
    return build_cli([*FIT, f"--trainer.default_root_dir={root}"]), root


@pytest.mark.integration
def test_fit_logs_to_tensorboard_and_checkpoints(trained):
    cli, root = trained
    assert cli.trainer.global_step == 4
    log_dir = Path(cli.trainer.log_dir)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/tokens_per_sec", "train/images_per_sec", "val/accuracy", "val/majority_baseline"):
        assert tag in tags, tags
    assert any(t.startswith("train/lr_") for t in tags)
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    assert (log_dir / "config.yaml").is_file()


@pytest.mark.integration
def test_checkpoint_rebuilds_the_model_from_its_config(trained):
    cli, _ = trained
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    loaded = VLMModule.load_from_checkpoint(ckpt, weights_only=False)
    batch = next(iter(cli.datamodule.val_dataloader()))
    cli.model.eval()
    with torch.no_grad():
        assert torch.equal(cli.model(batch).logits, loaded(batch).logits)


@pytest.mark.integration
def test_validate_and_predict_from_checkpoint(trained, tmp_path):
    cli, _ = trained
    ckpt = str(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt")
    common = [*SMALL, f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    validate = build_cli(["validate", "--config", QUICKSTART, *common, f"--ckpt_path={ckpt}"])
    metrics = validate.trainer.callback_metrics
    assert 0.0 <= float(metrics["val/accuracy"]) <= 1.0 and float(metrics["val/loss"]) > 0
    predict = build_cli(["predict", "--config", QUICKSTART, *common, f"--ckpt_path={ckpt}"])
    lines = (Path(predict.trainer.log_dir) / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    assert {"prediction", "question", "answer", "task"} <= set(records[0])


@pytest.mark.integration
def test_same_seed_trains_to_identical_weights(trained, tmp_path):
    cli, _ = trained
    again = build_cli([*FIT, f"--trainer.default_root_dir={tmp_path}"])
    first, second = cli.model.state_dict(), again.model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other_seed = build_cli([*FIT, f"--trainer.default_root_dir={tmp_path / 'other'}", "--seed_everything=1"])
    assert not torch.equal(first["vlm.connector.latents"], other_seed.model.state_dict()["vlm.connector.latents"])


@pytest.mark.integration
def test_swapping_the_connector_is_one_flag(tmp_path):
    cli = build_cli(
        ["--config", QUICKSTART, "--model.vlm.connector", "vlmkit.connectors.MLPProjection"],
        run=False,
    )
    from vlmkit.connectors import MLPProjection

    assert isinstance(cli.model.vlm.connector, MLPProjection)
    assert cli.model.vlm.num_image_tokens(96, 96) == 144


@pytest.mark.integration
def test_console_script_help_documents_arguments():
    out = subprocess.run(
        [sys.executable, "-m", "vlmkit", "fit", "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "--model.learning_rates" in out
    assert "Per-part learning rates" in out


@pytest.mark.integration
def test_bad_yaml_key_is_named(capsys):
    with pytest.raises(SystemExit):
        build_cli(["--config", QUICKSTART, "--model.vlm.init_args.connector.init_args.num_latentz=3"], run=False)
    assert "num_latentz" in capsys.readouterr().err
