"""``vlmkit report`` (also ``python -m vlmkit.report``): parameters and forward FLOPs per part of a recipe's model.

vlmkit report --config recipes/quickstart.yaml [--config ...] --text-length 128 --num-images 1
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vlmkit.cli.lightning_cli import build_cli
from vlmkit.cli.recipe_files import check_configs
from vlmkit.report import model_report


def main(argv: Sequence[str] | None = None) -> None:
    """Build the model of a recipe (``--config`` as for ``vlmkit``) and print its report."""
    parser = argparse.ArgumentParser(prog="vlmkit report", description=__doc__.splitlines()[0])
    parser.add_argument("--text-length", type=int, default=128, help="text tokens of the sample")
    parser.add_argument("--num-images", type=int, default=1, help="images of the sample")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, help="processed image HEIGHT WIDTH")
    args, rest = parser.parse_known_args(argv)
    check_configs(rest)
    cli = build_cli(rest, run=False)
    vlm = cli.model.vlm.eval()
    size = tuple(args.image_size) if args.image_size else (cli.datamodule.hparams.get("max_image_size", 384),) * 2
    patch = vlm.vision_encoder.patch_size
    size = tuple(max(patch, s // patch * patch) for s in size)
    print(model_report(vlm, args.text_length, args.num_images, size).table())
