"""``vlmkit data build`` (inputs -> webdataset shards) and ``vlmkit data synth`` (synthetic inputs).

Examples::

    vlmkit data synth --format pair --num 2000 --output data/raw/pairs
    vlmkit data build --input data/raw/pairs --output data/shards/pairs --format pair --max-samples-per-shard 500
"""

from __future__ import annotations

import argparse
import sys

from vlmkit.data.formats import FORMATS
from vlmkit.data.shards import read_input, write_shards
from vlmkit.data.sources import write_synthetic_jsonl


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmkit data", description="Build webdataset shards for vlmkit.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "build",
        help="convert a folder of images + JSONL, or a saved HF dataset, into tar shards + manifest.json",
        description="Samples that fail validation (missing field or image, corrupt image, bad JSON/UTF-8) are "
        "skipped, counted in manifest.json under 'skipped', and make the command fail with --strict.",
    )
    build.add_argument("--input", required=True, help="JSONL file, folder of *.jsonl (+ images), or save_to_disk dir")
    build.add_argument("--output", required=True, help="output folder (shard-000000.tar, ..., manifest.json)")
    build.add_argument("--format", required=True, choices=FORMATS)
    build.add_argument("--max-samples-per-shard", type=int, default=10_000)
    build.add_argument("--max-shard-bytes", type=int, default=1 << 30)
    build.add_argument("--strict", action="store_true", help="exit with an error if any input sample was skipped")
    synth = commands.add_parser("synth", help="write synthetic samples as images + data.jsonl (build input)")
    synth.add_argument("--format", required=True, choices=FORMATS)
    synth.add_argument("--num", type=int, required=True)
    synth.add_argument("--output", required=True)
    synth.add_argument("--seed", type=int, default=0)
    return parser


def main(args: list[str] | None = None) -> dict:
    """Run ``vlmkit data <command>``; returns the manifest (build) or a summary (synth).

    Raises:
        SystemExit: On bad arguments, or skipped samples under ``--strict``.
    """
    options = _parser().parse_args(args)
    if options.command == "synth":
        path = write_synthetic_jsonl(options.format, options.num, options.output, options.seed)
        print(f"wrote {options.num} synthetic {options.format} samples to {path}")
        return {"path": str(path), "num_samples": options.num}
    manifest = write_shards(
        read_input(options.input, options.format),
        options.output,
        options.format,
        options.max_samples_per_shard,
        options.max_shard_bytes,
    )
    skipped = sum(manifest["skipped"].values())
    print(
        f"wrote {manifest['num_samples']} {options.format} samples in {len(manifest['shards'])} shards to "
        f"{options.output}; skipped {skipped} {manifest['skipped'] or ''}"
    )
    if skipped and options.strict:
        sys.exit(f"--strict: {skipped} input samples were skipped: {manifest['skipped']}")
    return manifest
