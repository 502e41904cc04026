"""End-to-end: the quickstart recipe through the CLI, checkpoint reload, validate and predict."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlmkit.cli import build_cli, main
from vlmkit.training import VLMModule

ROOT = Path(__file__).resolve().parents[2]
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
    assert (Path(root) / "checkpoints" / "last.ckpt").is_file()  # the run folder, whatever the log version
    assert (log_dir / "config.yaml").is_file()


@pytest.mark.integration
def test_checkpoint_rebuilds_the_model_from_its_config(trained):
    cli, _ = trained
    ckpt = Path(cli.trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    loaded = VLMModule.load_from_checkpoint(ckpt, weights_only=False)
    batch = next(iter(cli.datamodule.val_dataloader()))
    cli.model.eval()
    with torch.no_grad():
        assert torch.equal(cli.model(batch).logits, loaded(batch).logits)


@pytest.mark.integration
def test_validate_and_predict_from_checkpoint(trained, tmp_path):
    cli, _ = trained
    ckpt = str(Path(cli.trainer.default_root_dir) / "checkpoints" / "last.ckpt")
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


def _vlmkit(*args, timeout=300):
    """Run the console script (as a user does); returns ``(exit code, stderr)``."""
    result = subprocess.run([sys.executable, "-m", "vlmkit", *args], capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stderr


def _one_error_line(stderr):
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("vlmkit: error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.mark.integration
def test_a_checkpoint_of_another_model_does_not_silently_win(trained, tmp_path):
    cli, _ = trained
    ckpt = str(Path(cli.trainer.default_root_dir) / "checkpoints" / "last.ckpt")  # a perceiver model
    common = ["validate", "--config", QUICKSTART, *SMALL, f"--trainer.default_root_dir={tmp_path}", "--ckpt_path", ckpt]
    code, stderr = _vlmkit(*common, "--model.vlm.connector", "vlmkit.connectors.MLPProjection")
    line = _one_error_line(stderr)
    assert code == 1
    expected = "model.vlm.connector is vlmkit.connectors.MLPProjection here but vlmkit.connectors.PerceiverResampler"
    assert expected in line
    assert "--config_mismatch use_checkpoint" in line and "--config_mismatch use_command_line" in line
    # the explicit choices, in process: the checkpoint's model, or the given one (whose weights then do not fit)
    used = build_cli([*common, "--model.vlm.connector", "vlmkit.connectors.MLPProjection",
                      "--config_mismatch", "use_checkpoint", "--trainer.logger=false"])  # fmt: skip
    assert type(used.model.vlm.connector).__name__ == "PerceiverResampler"
    with pytest.raises(RuntimeError, match="Missing key"):
        build_cli([*common, "--model.vlm.connector", "vlmkit.connectors.MLPProjection",
                   "--config_mismatch", "use_command_line", "--trainer.logger=false"])  # fmt: skip
    given = build_cli([*common, "--model.max_new_tokens", "3", "--trainer.logger=false"])  # not the model: used
    assert given.model.max_new_tokens == 3


@pytest.mark.integration
def test_missing_and_truncated_checkpoints_are_one_line_naming_the_file(trained, tmp_path):
    cli, _ = trained
    ckpt = Path(cli.trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    base = ["--config", QUICKSTART, *SMALL, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=1"]
    code, stderr = _vlmkit("validate", *base, "--ckpt_path", str(cut))
    assert code == 1 and "cannot read checkpoint" in _one_error_line(stderr) and "cut.ckpt" in stderr
    code, stderr = _vlmkit("fit", *base, "--model.init_from", str(tmp_path / "stage1.ckpt"))
    assert code == 1 and _one_error_line(stderr).endswith(f"init_from checkpoint not found: {tmp_path / 'stage1.ckpt'}")
    for bad, message in ((tmp_path / "gone.ckpt", "not found"), (tmp_path / "empty.ckpt", "empty file")):
        if bad.name == "empty.ckpt":
            bad.write_bytes(b"")
        with pytest.raises(SystemExit, match=rf"vlmkit: error: .*{bad.name}.*{message}|{message}.*{bad.name}"):
            main(["validate", *base, "--ckpt_path", str(bad)])


@pytest.mark.integration
def test_data_build_with_a_5000_character_image_path_is_one_warning_and_a_manifest(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"images": ["y" * 5000 + ".png"], "text": "x"}) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "vlmkit", "data", "build", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
         "--format", "pdf"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "skipped 1 {'missing_image': 1}" in result.stdout
    assert "File name too long" in result.stderr and len(max(result.stderr.splitlines(), key=len)) < 600
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped"] == {"missing_image": 1}


def test_config_differences_count_only_what_was_given():
    from vlmkit.cli import config_differences

    def part(cls, **args):
        return {"class_path": cls, "init_args": args}

    saved = {
        "vlm": part("M", connector=part("Perceiver", num_latents=32), encoder=part("E", config={"hidden": 128})),
        "max_new_tokens": 16,
        "optimizer": part("torch.optim.AdamW", lr=0.001),
    }
    defaults = {"vlm": None, "max_new_tokens": 16, "optimizer": part("torch.optim.AdamW", lr=0.001), "new_arg": 1}
    assert config_differences(saved, {"vlm": None, **{k: v for k, v in defaults.items() if k != "vlm"}}, defaults) == []
    given = {
        "vlm": part("M", connector=part("MLP", gated=True), encoder=part("E", config={"hidden": 128, "head": False})),
        "max_new_tokens": 16,  # the default: not given, the checkpoint's value stays
        "optimizer": part("torch.optim.AdamW", lr=0.01),
        "new_arg": 1,  # unknown to the checkpoint, at its default
    }
    assert config_differences(saved, given, defaults) == [
        (("optimizer", "init_args", "lr"), 0.001, 0.01),
        (("vlm", "init_args", "connector"), "Perceiver", "MLP"),  # one difference for the whole part
        (("vlm", "init_args", "encoder", "init_args", "config", "head"), None, False),
    ]


def test_the_model_gets_the_evaluator_its_data_brings(tmp_path):
    evaluation = str(ROOT / "recipes" / "eval" / "synthetic.yaml")
    args = ["--trainer.logger", "false", f"--trainer.default_root_dir={tmp_path}"]
    cli = build_cli(["--config", QUICKSTART, "--config", evaluation, *args], run=False)
    assert cli.model.evaluator is cli.datamodule.evaluator
    assert [task.name for task in cli.model.evaluator.tasks] == ["synthetic_0shot", "synthetic_8shot"]
    assert "evaluator" not in cli.model.hparams  # wired from the data, not a saved model argument
    assert build_cli(["--config", QUICKSTART, *args], run=False).model.evaluator is None
