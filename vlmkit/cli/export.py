"""``vlmkit export``: a recipe's model, a checkpoint loaded, merged weights or adapters written (:mod:`vlmkit.export`).

vlmkit export --config recipes/quickstart.yaml --ckpt_path runs/.../last.ckpt --output_dir exported/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmkit.cli.lightning_cli import build_cli
from vlmkit.export import export
from vlmkit.training.safe_loading import existing_checkpoint


def main(args: list[str] | None = None) -> Path:
    """Entry point of ``vlmkit export``; recipe arguments (``--config``, ``--model.*``) build the model."""
    parser = argparse.ArgumentParser(
        prog="vlmkit export",
        description="Export a trained vlmkit model: adapters merged into plain safetensors weights, or adapters only. "
        "All other arguments (--config, --model.*) are the recipe's, as given to `vlmkit fit`.",
    )
    parser.add_argument("--ckpt_path", required=True, help="Lightning checkpoint file or sharded checkpoint folder")
    parser.add_argument("--output_dir", required=True, help="folder for model.safetensors / trainable.safetensors")
    parser.add_argument("--adapters_only", action="store_true", help="save only trainable parameters (no merge)")
    parser.add_argument(
        "--trust_checkpoint",
        action="store_true",
        help="unpickle the checkpoint in full (weights_only=False): runs any code it holds; only for files you trust",
    )
    known, recipe_args = parser.parse_known_args(args)

    existing_checkpoint(known.ckpt_path)  # fail before building the model
    cli = build_cli([*recipe_args, "--trainer.logger", "false"], run=False)
    path = export(cli.model.vlm, known.ckpt_path, known.output_dir, known.adapters_only, known.trust_checkpoint)
    cli.parser.save(cli.config, str(Path(known.output_dir) / "recipe.yaml"), overwrite=True, skip_check=True)
    print(f"wrote {path}")
    return path
