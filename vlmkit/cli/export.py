"""``vlmkit export``: a trained model as merged weights, adapters only, or a ``save_pretrained`` folder.

The recipe's model is built, the checkpoint loaded, and :mod:`vlmkit.export` or
:meth:`vlmkit.model.VisionLanguageModel.save_pretrained` writes it:

vlmkit export --config recipes/quickstart.yaml --ckpt_path runs/.../last.ckpt --output_dir exported/
vlmkit export --config recipes/quickstart.yaml --ckpt_path runs/.../last.ckpt --output_dir exported/ --format pretrained
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlmkit.cli.recipe import add_checkpoint_arguments, recipe_cli
from vlmkit.export import export

FORMATS = ("merged", "adapters", "pretrained")


def main(args: list[str] | None = None) -> Path:
    """Entry point of ``vlmkit export``; recipe arguments (``--config``, ``--model.*``) build the model."""
    parser = argparse.ArgumentParser(
        prog="vlmkit export",
        description="Export a trained vlmkit model: adapters merged into plain safetensors weights (merged), "
        "adapters and new parts only (adapters), or a save_pretrained folder that loads without the recipe "
        "(pretrained: VisionLanguageModel.from_pretrained, vlmkit generate). All other arguments (--config, "
        "--model.*) are the recipe's, as given to `vlmkit fit`.",
    )
    add_checkpoint_arguments(parser, "folder for the exported model", ckpt_required=True)
    parser.add_argument("--format", choices=FORMATS, default="merged", help="what to write (default: merged)")
    parser.add_argument("--adapters_only", action="store_true", help="same as --format adapters")
    known, recipe_args = parser.parse_known_args(args)
    cli = recipe_cli(recipe_args, known.ckpt_path)
    recipe = json.loads(cli.parser.dump(cli.config, format="json", skip_check=True))
    if known.format == "pretrained":
        from vlmkit.training.checkpoints import load_model_weights

        vlm = cli.model.vlm
        opt_in = "pass --trust_checkpoint to `vlmkit export`"
        load_model_weights(vlm, known.ckpt_path, trust=known.trust_checkpoint, opt_in=opt_in)
        data = (recipe.get("data") or {}).get("init_args") or {}
        processor = {k: data[k] for k in ("max_image_size", "min_image_size", "resize_mode") if data.get(k)}
        if data.get("eval_image_splitting") is not None:
            processor["split_images"] = bool(data["eval_image_splitting"])
        path = vlm.save_pretrained(known.output_dir, processor=processor, recipe=recipe, config=recipe["model"]["vlm"])
        print(f"wrote {path} (VisionLanguageModel.from_pretrained, vlmkit generate --checkpoint {path})")
        return path
    adapters_only = known.adapters_only or known.format == "adapters"
    path = export(cli.model.vlm, known.ckpt_path, known.output_dir, adapters_only, known.trust_checkpoint)
    cli.parser.save(cli.config, str(Path(known.output_dir) / "recipe.yaml"), overwrite=True, skip_check=True)
    print(f"wrote {path}")
    return path
