"""Where a run's checkpoints go, read from its configuration."""

from pathlib import Path

from vlmkit.cli.run_paths import RunPaths, run_folder

CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"


def test_checkpoints_are_in_the_run_folder_unless_a_dirpath_is_given():
    config = {"trainer": {"default_root_dir": "runs/quickstart", "callbacks": [{"class_path": CHECKPOINT}]}}
    paths = RunPaths.from_config(config)
    assert paths.root == Path("runs/quickstart") and paths.last == Path("runs/quickstart/checkpoints/last.ckpt")
    config["trainer"]["callbacks"] = [
        {"class_path": "vlmkit.training.PredictionWriter", "init_args": {"dirpath": "elsewhere"}},
        {"class_path": CHECKPOINT, "init_args": {"dirpath": "runs/pretrain/stage1/checkpoints"}},
    ]
    assert RunPaths.from_config(config).last == Path("runs/pretrain/stage1/checkpoints/last.ckpt")
    assert RunPaths.from_config({"trainer": {}}).last == Path("checkpoints/last.ckpt")  # Lightning: the cwd


def test_run_folder_of_a_checkpoint():
    assert run_folder("runs/quickstart/checkpoints/last.ckpt") == Path("runs/quickstart")
    assert run_folder("old/lightning_logs/version_0/checkpoints/last.ckpt") == Path("old/lightning_logs/version_0")
    assert run_folder("model.ckpt") == Path(".")
