"""``vlmkit export-idefics2`` / ``export-idefics3``: a trained vlmkit checkpoint -> a transformers checkpoint directory.

As ``vlmkit export``, the model is rebuilt from the recipe it was trained with (``--config`` and any ``--model.*``
flags, as given to ``vlmkit fit``), the checkpoint's weights are loaded (file or sharded folder), adapters are
merged, and :func:`~vlmkit.interop.export_idefics2` (:func:`~vlmkit.interop.export_idefics3`) writes config,
safetensors weights, processor and tokenizer:

    vlmkit export-idefics2 --config recipes/idefics2/instruction_tuning.yaml --ckpt_path runs/.../last.ckpt \
        --output_dir exported/idefics2 --split_images
    vlmkit export-idefics3 --config recipes/smolvlm/256m_qlora_1gpu.yaml --ckpt_path runs/.../last.ckpt \
        --output_dir exported/smolvlm --family idefics3 --max_image_size 2048
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlmkit.cli.recipe import add_checkpoint_arguments, trained_model
from vlmkit.deprecation import warn_deprecated
from vlmkit.errors import CheckpointError, UserInputError
from vlmkit.interop.idefics2 import export_idefics2
from vlmkit.interop.idefics2_processing import Idefics2ProcessorSettings
from vlmkit.interop.idefics3 import export_idefics3
from vlmkit.interop.idefics3_processing import Idefics3ProcessorSettings


def build_parser() -> argparse.ArgumentParser:
    """The export's own arguments; the remaining ones are the recipe's."""
    parser = argparse.ArgumentParser(
        prog="vlmkit export-idefics2",
        description="Export a trained vlmkit model as a transformers Idefics2 checkpoint (config, safetensors, "
        "Idefics2Processor, tokenizer; adapters merged). All other arguments (--config, --model.*) are the "
        "recipe's, as given to `vlmkit fit`.",
    )
    add_checkpoint_arguments(parser, "folder for the transformers checkpoint")
    parser.add_argument("--max_image_size", type=int, default=980, help="processor longest_edge (default 980)")
    parser.add_argument("--min_image_size", type=int, default=378, help="processor shortest_edge (default 378)")
    parser.add_argument("--split_images", action="store_true", help="processor do_image_splitting=True")
    parser.add_argument("--image_splitting", action="store_true", help=argparse.SUPPRESS)  # deprecated: --split_images
    return parser


def build_idefics3_parser() -> argparse.ArgumentParser:
    """``export-idefics3``'s own arguments; the remaining ones are the recipe's."""
    parser = argparse.ArgumentParser(
        prog="vlmkit export-idefics3",
        description="Export a trained vlmkit model as a transformers Idefics3 or SmolVLM checkpoint (config, "
        "safetensors, Idefics3Processor/SmolVLMProcessor, tokenizer; adapters merged). All other arguments "
        "(--config, --model.*) are the recipe's, as given to `vlmkit fit`.",
    )
    add_checkpoint_arguments(parser, "folder for the transformers checkpoint")
    parser.add_argument(
        "--family",
        choices=["idefics3", "smolvlm"],
        default="idefics3",
        help="idefics3: Idefics3ForConditionalGeneration (Idefics3, SmolVLM v1); "
        "smolvlm: SmolVLMForConditionalGeneration (SmolVLM2)",
    )
    parser.add_argument("--tile_size", type=int, help="processor max_image_size (default: the model's tile_size)")
    parser.add_argument("--max_image_size", type=int, help="processor size longest_edge (default: 4 tiles)")
    parser.add_argument("--no_split_images", action="store_true", help="processor do_image_splitting=False")
    parser.add_argument("--no_image_splitting", action="store_true", help=argparse.SUPPRESS)  # deprecated name
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
    vlm = trained_model(options, recipe_args, "export-idefics2")
    settings = Idefics2ProcessorSettings(
        max_image_size=options.max_image_size,
        min_image_size=options.min_image_size,
        image_mean=vlm.vision_encoder.image_mean,
        image_std=vlm.vision_encoder.image_std,
        split_images=options.split_images or options.image_splitting,
    )
    with _other_formats("Idefics2"):
        export_idefics2(vlm, options.output_dir, settings)
    print(f"wrote a transformers Idefics2 checkpoint to {options.output_dir}")
    return Path(options.output_dir)


def main_idefics3(args: list[str] | None = None) -> Path:
    """Entry point of ``vlmkit export-idefics3``; returns the output folder.

    Raises:
        ValueError: If the model does not have Idefics3's shape (the part named) or the checkpoint does not fit it.
        CheckpointError: If the checkpoint is missing, empty, truncated or needs full unpickling (without
            ``--trust_checkpoint``); the message names the file.
    """
    options, recipe_args = build_idefics3_parser().parse_known_args(args)
    if options.no_image_splitting:
        warn_deprecated("vlmkit export-idefics3 --no_image_splitting is now --no_split_images", stacklevel=2)
    vlm = trained_model(options, recipe_args, "export-idefics3")
    tile = options.tile_size or vlm.tile_size or vlm.vision_encoder.backbone.config.image_size
    settings = Idefics3ProcessorSettings(
        family=options.family,
        tile_size=tile,
        max_image_size=options.max_image_size or 4 * tile,
        image_mean=vlm.vision_encoder.image_mean,
        image_std=vlm.vision_encoder.image_std,
        split_images=not (options.no_split_images or options.no_image_splitting),
    )
    with _other_formats("Idefics3"):
        export_idefics3(vlm, options.output_dir, settings)
    print(f"wrote a transformers {options.family} checkpoint to {options.output_dir}")
    return Path(options.output_dir)


@contextmanager
def _other_formats(family: str) -> Iterator[None]:
    """A model of another shape than ``family``'s: one line naming the mismatch and the formats it can go to."""
    try:
        yield
    except CheckpointError:
        raise
    except ValueError as err:
        if "not exportable" not in str(err):
            raise
        raise UserInputError(
            f"{err}. This model is not {family}-shaped, so it cannot become a transformers {family} checkpoint; "
            "it can go to: merged vlmkit safetensors (`vlmkit export --config <recipe> --ckpt_path <ckpt> "
            "--output_dir <dir>`), its adapters and new parts only (`vlmkit export ... --adapters_only`), or a "
            "save_pretrained folder that loads without the recipe (`vlmkit export ... --format pretrained`)"
        ) from err


if __name__ == "__main__":
    main()
