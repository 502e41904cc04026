"""Throughput of the webdataset pipeline (read, decode, render, pack, collate) per dataloader worker count.

    python benchmarks/data_pipeline.py [--samples 1000] [--batches 150] [--workers 0 1 2] [--out benchmarks/results]

Builds synthetic shards of all four formats in a temporary folder (``vlmkit data synth`` + ``build``), then
iterates a ``MixtureDataModule`` (stage-2-like mixture: 35% interleaved, 25% pairs, 20% PDFs, 20%
conversations; images <= 64 px; quickstart-size model for the placeholder counts) with and without packing
for each worker count, after one warm-up batch. Reports samples/s (samples read and rendered) and batches/s.
No model compute is timed. Prints a table and writes ``data_pipeline.json`` and ``data_pipeline.md``.
"""

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from vlmkit.connectors import PerceiverResampler
from vlmkit.data import MixtureDataModule, ShardSource
from vlmkit.data.shards import read_input, write_shards
from vlmkit.data.synthetic_sources import write_synthetic_jsonl
from vlmkit.llm import TransformersCausalLM
from vlmkit.model import VisionLanguageModel
from vlmkit.vision import TransformersVisionEncoder

VISION = {"model_type": "siglip_vision_model", "hidden_size": 128, "intermediate_size": 256,
          "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 96, "patch_size": 8}  # fmt: skip
LM = {"model_type": "mistral", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
      "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
      "vocab_size": 512}  # fmt: skip
MIXTURE = {"interleaved": (0.35, 256), "pair": (0.25, 192), "pdf": (0.2, 128), "conversation": (0.2, 256)}


def build(root: Path, samples: int) -> dict[str, Path]:
    folders = {}
    for format in MIXTURE:
        write_synthetic_jsonl(format, samples, root / "raw" / format)
        write_shards(read_input(root / "raw" / format, format), root / format, format, max_samples_per_shard=100)
        folders[format] = root / format
    return folders


def measure(vlm, folders, workers: int, pack_length: int | None, batches: int) -> dict:
    sources = [
        ShardSource(
            str(folders[f]), f, weight=w, max_length=n, max_image_size=64, min_image_size=32, shuffle_buffer=100
        )
        for f, (w, n) in MIXTURE.items()
    ]
    dm = MixtureDataModule(sources, batch_size=8, num_workers=workers, pack_length=pack_length)
    dm.connect(vlm)
    loader = dm.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # warm-up: worker start, first shards opened
    start = time.perf_counter()
    samples = tokens = 0
    for _ in range(batches):
        batch = next(iterator)
        segments = batch.get("segment_ids")  # packed: samples per row = last segment id + 1
        samples += batch["input_ids"].shape[0] if segments is None else int((segments.max(1).values + 1).sum())
        tokens += int(batch["attention_mask"].sum())
    seconds = time.perf_counter() - start
    del iterator
    return {
        "workers": workers,
        "packing": pack_length is not None,
        "samples_per_s": samples / seconds,
        "batches_per_s": batches / seconds,
        "tokens_per_s": tokens / seconds,
        "shares": {k: round(v, 3) for k, v in dm.train_stats.proportions().items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000, help="synthetic samples per format")
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.manual_seed(0)
    connector = functools.partial(PerceiverResampler, num_latents=32, depth=2, num_heads=4, head_dim=32)
    vlm = VisionLanguageModel(
        TransformersVisionEncoder(config=VISION, position_embedding="bucket"),
        connector,
        TransformersCausalLM(config=LM, tokenizer="synthetic"),
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = build(Path(tmp), args.samples)
        for pack_length in (None, 512):
            for workers in args.workers:
                results.append(measure(vlm, folders, workers, pack_length, args.batches))
    header = "| workers | packing | samples/s | batches/s (8 rows) | tokens/s |\n|---:|---|---:|---:|---:|"
    lines = [
        f"| {r['workers']} | {'512 tokens' if r['packing'] else 'off'} | {r['samples_per_s']:.1f} | "
        f"{r['batches_per_s']:.2f} | {r['tokens_per_s']:.0f} |"
        for r in results
    ]
    table = "\n".join([header, *lines])
    print(table)
    print(f"realised shares (target {', '.join(f'{k} {w}' for k, (w, _) in MIXTURE.items())}):", results[-1]["shares"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "torch": torch.__version__, "samples_per_format": args.samples}
    (out / "data_pipeline.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    note = (
        "Samples/s = samples read, decoded, rendered (and packed) into training batches; no model compute. "
        f"{meta['cpus']} CPUs, torch {meta['torch']}.\n\n"
    )
    (out / "data_pipeline.md").write_text(note + table + "\n")


if __name__ == "__main__":
    main()
