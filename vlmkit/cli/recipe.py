"""A recipe's model for the commands that export it: built from ``--config``/``--model.*``, a checkpoint loaded.

``vlmkit export``, ``export-idefics2`` and ``export-idefics3`` take the recipe's arguments as given to ``vlmkit fit``
plus their own; the checkpoint is checked to exist before the (possibly large) model is built, and read without
running code from it (``--trust_checkpoint`` opts out).
"""

from __future__ import annotations

import argparse
from typing import Any

from vlmkit.cli.lightning_cli import build_cli
from vlmkit.cli.recipe_files import check_configs
from vlmkit.training.checkpoints import load_model_weights
from vlmkit.training.safe_loading import existing_checkpoint


def add_checkpoint_arguments(parser: argparse.ArgumentParser, output_help: str, ckpt_required: bool = False) -> None:
    """``--ckpt_path``, ``--output_dir`` and ``--trust_checkpoint``, the arguments every export command takes."""
    omitted = "" if ckpt_required else " (omit: the recipe's weights)"
    parser.add_argument(
        "--ckpt_path", required=ckpt_required, help=f"Lightning checkpoint file or sharded folder{omitted}"
    )
    parser.add_argument("--output_dir", required=True, help=output_help)
    parser.add_argument(
        "--trust_checkpoint",
        action="store_true",
        help="unpickle the checkpoint in full (weights_only=False): runs any code it holds; only for files you trust",
    )


def recipe_cli(recipe_args: list[str], ckpt_path: str | None) -> Any:
    """The recipe's ``LightningCLI`` (built, not run), once its files are checked and ``ckpt_path`` (if any) exists."""
    check_configs(recipe_args)
    if ckpt_path is not None:
        existing_checkpoint(ckpt_path)  # fail before building the model
    return build_cli([*recipe_args, "--trainer.logger", "false"], run=False)


def trained_model(options: argparse.Namespace, recipe_args: list[str], command: str) -> Any:
    """The recipe's ``VisionLanguageModel`` with the weights of ``options.ckpt_path`` (if given)."""
    vlm = recipe_cli(recipe_args, options.ckpt_path).model.vlm
    if options.ckpt_path is not None:
        opt_in = f"pass --trust_checkpoint to `vlmkit {command}`"
        load_model_weights(vlm, options.ckpt_path, trust=options.trust_checkpoint, opt_in=opt_in)
    return vlm
