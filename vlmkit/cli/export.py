"""``vlmkit export``: a recipe's model, a checkpoint loaded, merged weights or adapters written (:mod:`vlmkit.export`).

vlmkit export --config recipes/quickstart.yaml --ckpt_path runs/.../last.ckpt --output_dir exported/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmkit.cli.recipe import add_checkpoint_arguments, recipe_cli
from vlmkit.export import export


def main(args: list[str] | None = None) -> Path:
    """Entry point of ``vlmkit export``; recipe arguments (``--config``, ``--model.*``) build the model."""
    parser = argparse.ArgumentParser(
        prog="vlmkit export",
        description="Export a trained vlmkit model: adapters merged into plain safetensors weights, or adapters only. "
        "All other arguments (--config, --model.*) are the recipe's, as given to `vlmkit fit`.",
    )
    add_checkpoint_arguments(parser, "folder for model.safetensors / trainable.safetensors", ckpt_required=True)
    parser.add_argument("--adapters_only", action="store_true", help="save only trainable parameters (no merge)")
    known, recipe_args = parser.parse_known_args(args)
    cli = recipe_cli(recipe_args, known.ckpt_path)
    path = export(cli.model.vlm, known.ckpt_path, known.output_dir, known.adapters_only, known.trust_checkpoint)
    cli.parser.save(cli.config, str(Path(known.output_dir) / "recipe.yaml"), overwrite=True, skip_check=True)
    print(f"wrote {path}")
    return path
