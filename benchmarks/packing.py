"""Packed (NaViT-style) vs padded vision encoding: tokens computed and train-step time on mixed aspect ratios.

    python benchmarks/packing.py [--steps 10] [--threads 1] [--out benchmarks/results]

A SigLIP-like encoder (hidden 128, 4 layers, patch 8) encodes one batch of 16 images with sides of 32..128 px and
aspect ratios between 1:3 and 3:1 (fixed seed), padded bottom/right to the largest height and width. Each attention
implementation runs the batch padded (block-diagonal mask over ``n * max grid`` tokens) and packed (one sequence of
the real patches). Prints a table and writes ``packing.json`` and ``packing.md``; steps of all rows are interleaved
and times are compared as ratios within the run (absolute times depend on the machine and its load).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vlmkit.vision import TransformersVisionEncoder

VISION = {"model_type": "siglip_vision_model", "hidden_size": 128, "intermediate_size": 512,
          "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 64, "patch_size": 8}  # fmt: skip
PATCH = VISION["patch_size"]
NUM_IMAGES = 16
WARMUP = 2


def image_sizes(count: int, seed: int = 0) -> list[tuple[int, int]]:
    """``count`` (height, width) pairs, multiples of the patch size in 32..128 with aspect ratio at most 3:1."""
    generator = torch.Generator().manual_seed(seed)
    sizes = []
    while len(sizes) < count:
        height, width = (PATCH * torch.randint(32 // PATCH, 128 // PATCH + 1, (2,), generator=generator)).tolist()
        if max(height, width) <= 3 * min(height, width):
            sizes.append((height, width))
    return sizes


def padded_batch(sizes: list[tuple[int, int]], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images of ``sizes`` padded to one ``[n, 3, H, W]`` batch, and the ``[n, H/8, W/8]`` patch mask."""
    generator = torch.Generator().manual_seed(seed)
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    pixels = torch.zeros(len(sizes), 3, height, width)
    patch_mask = torch.zeros(len(sizes), height // PATCH, width // PATCH, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        pixels[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        patch_mask[i, : h // PATCH, : w // PATCH] = True
    return pixels, patch_mask


def train_step(encoder: TransformersVisionEncoder, pixels: torch.Tensor, patch_mask: torch.Tensor) -> float:
    """Seconds for one forward + backward of a loss on the real patches' features."""
    start = time.perf_counter()
    features = encoder(pixels, patch_mask)  # [n, p, d]
    features[patch_mask.flatten(1)].pow(2).mean().backward()
    seconds = time.perf_counter() - start
    encoder.zero_grad(set_to_none=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed forward+backward steps per row (median)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for packing.json/.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    sizes = image_sizes(NUM_IMAGES)
    pixels, patch_mask = padded_batch(sizes)
    n, rows, cols = patch_mask.shape
    real_patches = int(patch_mask.sum())
    lengths = patch_mask.flatten(1).sum(1)
    configs = [(impl, packing) for impl in ("sdpa", "eager") for packing in (False, True)]
    encoders = {}
    for impl, packing in configs:
        torch.manual_seed(0)
        encoders[impl, packing] = TransformersVisionEncoder(
            config=VISION, attn_implementation=impl, patch_packing=packing
        ).train()

    times = {config: [] for config in configs}
    for step in range(WARMUP + args.steps):  # interleaved, so load changes hit all rows alike
        for config in configs:
            seconds = train_step(encoders[config], pixels, patch_mask)
            if step >= WARMUP:
                times[config].append(seconds)

    results = []
    for impl, packing in configs:
        results.append(
            {
                "attention": impl,
                "mode": "packed" if packing else "padded",
                "real_patches": real_patches,
                "computed_tokens": real_patches if packing else n * rows * cols,
                "attention_scores": real_patches**2 if packing else n * (rows * cols) ** 2,
                "step_ms": 1000 * statistics.median(times[impl, packing]),
            }
        )
    for row in results:
        padded = next(r for r in results if r["attention"] == row["attention"] and r["mode"] == "padded")
        row["time_vs_padded"] = row["step_ms"] / padded["step_ms"]

    lines = [
        f"{n} images, padded to {rows} x {cols} patches; per-image real patches "
        f"{int(lengths.min())}..{int(lengths.max())}; CPU, threads: {torch.get_num_threads()}, "
        f"median of {args.steps} steps.",
        "",
        "| attention | mode | real patches | computed tokens | attention scores / head / layer | "
        "fwd+bwd ms | time vs padded |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['attention']} | {r['mode']} | {r['real_patches']:,} | {r['computed_tokens']:,} | "
            f"{r['attention_scores']:,} | {r['step_ms']:.1f} | {r['time_vs_padded']:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "image_sizes": sizes,
        "padded_grid": [rows, cols],
        "rows": results,
    }
    (out / "packing.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "packing.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
