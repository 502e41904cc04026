"""Renamed arguments and moved modules keep working for one release, with a FutureWarning naming the new spelling."""

import importlib
import sys

import pytest

from vlmkit.deprecation import renamed_argument

ALIASES = {
    "vlmkit.data.shard_datamodule": ("vlmkit.data.mixture_datamodule", "MixtureDataModule"),
    "vlmkit.data.sources": ("vlmkit.data.synthetic_sources", "SyntheticSource"),
    "vlmkit.data.webdataset_source": ("vlmkit.data.shard_source", "ShardSource"),
    "vlmkit.training.callbacks": ("vlmkit.training.prediction_writer", "PredictionWriter"),
    "vlmkit.eval.lmms_eval_adapter": ("vlmkit.interop.lmms_eval", "lmms_eval_model"),
}


def test_renamed_argument_takes_the_old_name_with_a_warning_and_refuses_both():
    assert renamed_argument("Part", "old", None, "new", 3, 0) == 3
    with pytest.warns(FutureWarning, match=r"Part\(old=...\) is now Part\(new=...\)"):
        assert renamed_argument("Part", "old", 5, "new", 0, 0) == 5
    with pytest.raises(ValueError, match="give new=3 or the old old=5, not both"):
        renamed_argument("Part", "old", 5, "new", 3, 0)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_old_module_paths_still_import_with_a_warning(alias):
    target, name = ALIASES[alias]
    sys.modules.pop(alias, None)
    with pytest.warns(FutureWarning, match=f"{alias} is now {target}"):
        old = importlib.import_module(alias)
    assert getattr(old, name) is getattr(importlib.import_module(target), name)


def test_importing_the_packages_warns_about_nothing():
    import subprocess

    packages = ("vlmkit.data", "vlmkit.eval", "vlmkit.training", "vlmkit.interop", "vlmkit.model", "vlmkit.cli")
    code = "; ".join(f"import {package}" for package in packages)
    subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], check=True, timeout=120)


def test_old_class_paths_in_yaml_still_build(tmp_path):
    from vlmkit.cli import build_cli

    for alias in ALIASES:  # imported afresh, so that they warn again
        sys.modules.pop(alias, None)
    recipe = tmp_path / "old.yaml"
    recipe.write_text(
        "data:\n"
        "  class_path: vlmkit.data.shard_datamodule.MixtureDataModule\n"
        "  init_args:\n"
        "    sources:\n"
        "      - class_path: vlmkit.data.sources.SyntheticSource\n"
        "        init_args: {format: pair, max_length: 64}\n"
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: vlmkit.training.callbacks.PredictionWriter\n"
    )
    args = ["--config", "recipes/quickstart.yaml", "--config", str(recipe), "--trainer.logger", "false"]
    with pytest.warns(FutureWarning, match="is now vlmkit"):
        cli = build_cli([*args, f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert type(cli.datamodule).__name__ == "MixtureDataModule"
    assert type(cli.datamodule.sources[0]).__name__ == "SyntheticSource"


def test_renamed_user_facing_arguments():
    from vlmkit.eval.datamodule import EvaluationDataModule
    from vlmkit.eval.metrics import ExactMatch
    from vlmkit.eval.task import EvalTask
    from vlmkit.interop import Idefics2ProcessorSettings

    task = EvalTask("x", lambda: [], ExactMatch())
    with pytest.warns(
        FutureWarning, match=r"EvaluationDataModule\(image_splitting=...\) is now .*eval_image_splitting"
    ):
        assert EvaluationDataModule([task], image_splitting=True).eval_image_splitting
    with pytest.warns(FutureWarning, match="image_splitting=...\\) is now .*split_images"):
        settings = Idefics2ProcessorSettings(image_splitting=True)
    assert settings.split_images
    with pytest.warns(FutureWarning, match="image_splitting is now split_images"):
        assert settings.image_splitting
