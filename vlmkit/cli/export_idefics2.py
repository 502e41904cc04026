"""``vlmkit export-idefics2``: a trained vlmkit checkpoint -> a transformers Idefics2 checkpoint directory.

As ``vlmkit export``, the model is rebuilt from the recipe it was trained with (``--config`` and any ``--model.*``
flags, as given to ``vlmkit fit``), the checkpoint's weights are loaded (file or sharded folder), adapters are
merged, and :func:`~vlmkit.interop.export_idefics2` writes config, safetensors weights, processor and tokenizer:

    vlmkit export-idefics2 --config recipes/idefics2/instruction_tuning.yaml --ckpt_path runs/.../last.ckpt \
        --output_dir exported/idefics2 --split_images
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmkit.cli.lightning_cli import build_cli
from vlmkit.deprecation import warn_deprecated
from vlmkit.interop.idefics2 import export_idefics2
from vlmkit.interop.idefics2_processing import Idefics2ProcessorSettings
from vlmkit.training.checkpoints import load_model_weights
from vlmkit.training.safe_loading import existing_checkpoint


def build_parser() -> argparse.ArgumentParser:
    """The export's own arguments; the remaining ones are the recipe's."""
    parser = argparse.ArgumentParser(
        prog="vlmkit export-idefics2",
        description="Export a trained vlmkit model as a transformers Idefics2 checkpoint (config, safetensors, "
        "Idefics2Processor, tokenizer; adapters merged). All other arguments (--config, --model.*) are the "
        "recipe's, as given to `vlmkit fit`.",
    )
    parser.add_argument("--ckpt_path", help="Lightning checkpoint file or sharded folder (omit: the recipe's weights)")
    parser.add_argument("--output_dir", required=True, help="folder for the transformers checkpoint")
    parser.add_argument("--max_image_size", type=int, default=980, help="processor longest_edge (default 980)")
    parser.add_argument("--min_image_size", type=int, default=378, help="processor shortest_edge (default 378)")
    parser.add_argument("--split_images", action="store_true", help="processor do_image_splitting=True")
    parser.add_argument("--image_splitting", action="store_true", help=argparse.SUPPRESS)  # deprecated: --split_images
    parser.add_argument(
        "--trust_checkpoint",
        action="store_true",
        help="unpickle the checkpoint in full (weights_only=False): runs any code it holds; only for files you trust",
    )
    return parser


def main(args: list[str] | None = None) -> Path:
    """Entry point of ``vlmkit export-idefics2``; returns the output folder.

    Raises:
        ValueError: If the model does not have Idefics2's shape (the part named) or the checkpoint does not fit it.
        CheckpointError: If the checkpoint is missing, empty, truncated or needs full unpickling (without
            ``--trust_checkpoint``); the message names the file.
    """
    options, recipe_args = build_parser().parse_known_args(args)
    if options.image_splitting:
        warn_deprecated("vlmkit export-idefics2 --image_splitting is now --split_images", stacklevel=2)
    if options.ckpt_path is not None:
        existing_checkpoint(options.ckpt_path)  # fail before building the model
    cli = build_cli([*recipe_args, "--trainer.logger", "false"], run=False)
    vlm = cli.model.vlm
    if options.ckpt_path is not None:
        opt_in = "pass --trust_checkpoint to `vlmkit export-idefics2`"
        load_model_weights(vlm, options.ckpt_path, trust=options.trust_checkpoint, opt_in=opt_in)
    settings = Idefics2ProcessorSettings(
        max_image_size=options.max_image_size,
        min_image_size=options.min_image_size,
        image_mean=vlm.vision_encoder.image_mean,
        image_std=vlm.vision_encoder.image_std,
        split_images=options.split_images or options.image_splitting,
    )
    export_idefics2(vlm, options.output_dir, settings)
    print(f"wrote a transformers Idefics2 checkpoint to {options.output_dir}")
    return Path(options.output_dir)


if __name__ == "__main__":
    main()
