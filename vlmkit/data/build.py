"""``vlmkit data build`` (inputs -> webdataset shards) and ``vlmkit data synth`` (synthetic inputs).

Examples::

    vlmkit data synth --format pair --num 2000 --output data/raw/pairs
    vlmkit data build --input data/raw/pairs --output data/shards/pairs --format pair --max-samples-per-shard 500
"""

from __future__ import annotations

import argparse
import sys

from vlmkit.data.formats import FORMATS
from vlmkit.data.image_decode import DEFAULT_MAX_IMAGE_PIXELS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmkit data", description="Build webdataset shards for vlmkit.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "build",
        help="convert a folder of images + JSONL, or a saved HF dataset, into tar shards + manifest.json",
        description="Samples that fail validation (missing field or image, an image that does not decode or orient, "
        "bad JSON/UTF-8) are skipped, counted in manifest.json under 'skipped', and make the command fail with "
        "--strict. The shards are written to a hidden folder beside --output and moved into place at the end: a "
        "failed or --strict build leaves --output as it was.",
    )
    build.add_argument("--input", required=True, help="JSONL file, folder of *.jsonl (+ images), or save_to_disk dir")
    build.add_argument("--output", required=True, help="output folder (shard-000000.tar, ..., manifest.json)")
    build.add_argument("--format", required=True, choices=FORMATS)
    build.add_argument("--max-samples-per-shard", type=int, default=10_000)
    build.add_argument("--max-shard-bytes", type=int, default=1 << 30)
    build.add_argument(
        "--strict", action="store_true", help="exit with an error, writing nothing, if any input sample was skipped"
    )
    build.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="skip images that decode to more pixels (too_many_pixels; a JPEG counts at 1/8 of each side), "
        f"as training's ShardSource(max_image_pixels) (default {DEFAULT_MAX_IMAGE_PIXELS:,})",
    )
    synth = commands.add_parser("synth", help="write synthetic samples as images + data.jsonl (build input)")
    synth.add_argument("--format", required=True, choices=FORMATS)
    synth.add_argument("--num", type=int, required=True)
    synth.add_argument("--output", required=True)
    synth.add_argument("--seed", type=int, default=0)
    return parser


def main(args: list[str] | None = None) -> dict:
    """Run ``vlmkit data <command>``; returns the manifest (build) or a summary (synth).

    Raises:
        SystemExit: On bad arguments, a missing input, or skipped samples under ``--strict`` (nothing written).
    """
    options = _parser().parse_args(args)
    from vlmkit.data.shards import read_input, write_shards  # after --help: it needs no torch
    from vlmkit.data.synthetic_sources import write_synthetic_jsonl

    if options.command == "synth":
        path = write_synthetic_jsonl(options.format, options.num, options.output, options.seed)
        print(f"wrote {options.num} synthetic {options.format} samples to {path}")
        return {"path": str(path), "num_samples": options.num}
    try:
        items = read_input(options.input, options.format, options.max_image_pixels)
    except FileNotFoundError as err:
        sys.exit(f"vlmkit data build: error: {err}")
    manifest = write_shards(
        items,
        options.output,
        options.format,
        options.max_samples_per_shard,
        options.max_shard_bytes,
        strict=options.strict,
    )
    skipped = sum(manifest["skipped"].values())
    print(
        f"wrote {manifest['num_samples']} {options.format} samples in {len(manifest['shards'])} shards to "
        f"{options.output}; skipped {skipped} {manifest['skipped'] or ''}"
    )
    return manifest
