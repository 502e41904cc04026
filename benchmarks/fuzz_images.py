"""Fuzz the image path with thousands of hostile images: every sample is used or skipped with a reason, memory bounded.

    python benchmarks/fuzz_images.py [--images 3000] [--seed 0] [--workers 2] [--out benchmarks/results]

The corpus (``tests/hostile_images.py``): valid JPEG/PNG/WebP/GIF/TIFF/BMP files (EXIF rotation, EXIF that is not
TIFF, truncated EXIF, a 300 KB ICC profile, animations, palette with transparency, 16-bit, float with NaN, CMYK,
1x1, extreme aspect ratios) and ``--images`` seeded random mutations of them (byte flips, truncations, insertions,
deletions, duplicated runs, garbled headers), plus large images: a 6000 x 6000 JPEG, a 12000 x 12000 PNG (below
Pillow's decompression-bomb limit) and documents of 8 images of 4000 x 3000 whose truncation keeps 2.

1. **Training**: the images are written as shard members as they are (no build-time check) and read through the
   real pipeline (``ShardSource`` -> ``MixtureDataModule`` -> ``StatefulDataLoader`` with ``--workers`` workers
   -> render -> collate), once without and once with image splitting. Checked: used + skipped == written,
   batches hold exactly the used samples.
2. **Build**: the same images as files + ``data.jsonl`` through ``vlmkit data build`` (``read_input`` +
   ``write_shards``); then the built shards through the pipeline. Checked: built + skipped == inputs, and every
   built sample is used by training.

Reports counts per reason and peak resident memory (``ru_maxrss``) of the main process and of the dataloader
workers, and writes ``fuzz_images.json`` and ``fuzz_images.md``. Any exception other than a counted skip fails.
"""

import argparse
import functools
import io
import json
import multiprocessing
import os
import resource
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the corpus generator lives with the tests
from hostile_images import mutations, png_blank  # noqa: E402

from vlmkit.connectors import PerceiverResampler  # noqa: E402
from vlmkit.data import MixtureDataModule, ShardSource  # noqa: E402
from vlmkit.data.formats import Record  # noqa: E402
from vlmkit.data.render import unsplit_image_spans  # noqa: E402
from vlmkit.data.shards import ShardItem, read_input, write_shards  # noqa: E402
from vlmkit.data.stats import GOOD  # noqa: E402
from vlmkit.llm import TransformersCausalLM  # noqa: E402
from vlmkit.model import VisionLanguageModel  # noqa: E402
from vlmkit.vision import TransformersVisionEncoder  # noqa: E402

VISION = {"model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 64, "patch_size": 8}  # fmt: skip
LM = {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
      "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 2048,
      "vocab_size": 512}  # fmt: skip


def max_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: kilobytes


def large_images() -> list[tuple[str, bytes]]:
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000), (120, 30, 200)).save(buffer, format="JPEG", quality=60)
    return [("jpeg_6000x6000", buffer.getvalue()), ("png_12000x12000", png_blank(12_000, 12_000))]


def documents(count: int) -> list[ShardItem]:
    """Interleaved documents of 8 images of 4000 x 3000 (JPEG), text between them."""
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 200, 90)).save(buffer, format="JPEG", quality=60)
    items = []
    for d in range(count):
        texts, refs = [], []
        for i in range(8):
            texts += [f"Page {i} of document {d} shows a green field.", None]
            refs += [None, f"{i}.jpg"]
        items.append(
            ShardItem(f"doc{d}", {"texts": texts, "images": refs}, [(f"{i}.jpg", buffer.getvalue()) for i in range(8)])
        )
    return items


def budget_for_two_images(vlm, source: ShardSource) -> int:
    """The token budget at which truncation keeps the first 2 of a document's 8 images."""
    dm = MixtureDataModule(sources=[source])
    dm.connect(vlm)
    record = next(r for r in source.records(0, 1, 0, endless=False) if isinstance(r, Record))
    ids = dm.renderer(source, train=False)(record)["input_ids"].tolist()
    return unsplit_image_spans(ids, vlm.tokenizer.convert_tokens_to_ids("<image>"))[2][0] + 1


def read_all(vlm, sources, workers: int) -> dict:
    """Every sample of ``sources`` once through the validation loader; counts and rows."""
    dm = MixtureDataModule(sources=sources, val_sources=sources, batch_size=8, num_workers=workers)
    dm.connect(vlm)
    rows = 0
    for batch in dm.val_dataloader():
        rows += batch["input_ids"].shape[0]
        assert torch.isfinite(batch["pixel_values"]).all() if "pixel_values" in batch else True
    totals = dm.val_stats.totals()
    counts: Counter = Counter()
    for key, value in totals.items():
        counts[key.split("/", 1)[1]] += value
    return {"rows": rows, "counts": dict(sorted(counts.items()))}


def skipped(counts: dict) -> int:
    return sum(v for k, v in counts.items() if k not in GOOD)


def prepare(root: Path, images: int, seed: int) -> None:
    """Write the corpus as raw shards, as build inputs, and the documents (in a child process: the large images
    are generated at full size, which must not count in the measured process's peak memory)."""
    corpus = [*mutations(images, seed), *large_images()]
    items = [ShardItem(f"s{i:06d}", {"images": ["0.img"], "caption": "a picture"}, [("0.img", data)])
             for i, (_, data) in enumerate(corpus)]  # fmt: skip
    write_shards(items, root / "raw_pairs", "pair", max_samples_per_shard=250)
    write_shards(documents(4), root / "docs", "interleaved")
    (root / "inputs").mkdir()
    with (root / "inputs" / "data.jsonl").open("w") as lines:
        for i, (_, data) in enumerate(corpus):
            (root / "inputs" / f"{i}.img").write_bytes(data)
            lines.write(json.dumps({"images": [f"{i}.img"], "caption": "a picture"}) + "\n")
    (root / "count").write_text(str(len(corpus)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000, help="random mutations (plus the valid and large files)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="dataloader workers (0: decode in this process)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.manual_seed(0)
    connector = functools.partial(
        PerceiverResampler, num_latents=8, depth=1, num_heads=2, head_dim=16, num_key_value_heads=1
    )
    vlm = VisionLanguageModel(TransformersVisionEncoder(config=VISION), connector,
                              TransformersCausalLM(config=LM, tokenizer="synthetic"))  # fmt: skip
    sizes = {"max_length": 256, "max_image_size": 64, "min_image_size": 32, "shuffle_buffer": 0}
    report: dict = {"mutations": args.images, "seed": args.seed, "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        child = multiprocessing.get_context("spawn").Process(target=prepare, args=(root, args.images, args.seed))
        child.start()
        child.join()
        assert child.exitcode == 0, "preparing the corpus failed"
        total = report["images"] = int((root / "count").read_text())
        baseline_mb = max_rss_mb(resource.RUSAGE_SELF)
        # 1. training reads the hostile bytes as they are
        pairs = [ShardSource(str(root / "raw_pairs"), "pair", **sizes)]
        for name, split in (("training", False), ("training, images split", True)):
            for source in pairs:
                source.eval_image_splitting = split
            result = read_all(vlm, pairs, args.workers)
            assert result["counts"]["ok"] + skipped(result["counts"]) == total, result
            assert result["rows"] == result["counts"]["ok"], result
            report[name] = result
        docs = ShardSource(str(root / "docs"), "interleaved", **{**sizes, "max_length": 4096})
        docs.max_length = budget_for_two_images(vlm, docs)
        result = read_all(vlm, [docs], args.workers)
        assert result["counts"] == {"ok": 4, "dropped_images": 24}, result  # 2 of 8 images kept, 6 never decoded
        report["documents of 8 images of 4000 x 3000"] = result
        # 2. the build checks every input, then training reads what it built
        manifest = write_shards(read_input(root / "inputs", "pair"), root / "built", "pair", 250)
        assert manifest["num_samples"] + skipped({"ok": 0, **manifest["skipped"]}) == total, manifest
        report["build"] = {"built": manifest["num_samples"], "skipped": manifest["skipped"]}
        result = read_all(vlm, [ShardSource(str(root / "built"), "pair", **sizes)], args.workers)
        aspect = result["counts"].get("extreme_aspect_ratio", 0)  # a per-source limit the build does not know
        assert result["counts"]["ok"] + aspect == manifest["num_samples"], result
        report["training on the built shards"] = result
        peak_mb = max_rss_mb(resource.RUSAGE_SELF)
    report["peak_rss_mb"] = {
        "before": round(baseline_mb),
        "peak": round(peak_mb),
        "growth": round(peak_mb - baseline_mb),
    }
    if args.workers:
        report["peak_rss_mb"]["children"] = round(max_rss_mb(resource.RUSAGE_CHILDREN))
    lines = [f"{total} images ({args.images} mutations, seed {args.seed}, plus the valid files, a 6000 x 6000 JPEG "
             f"and a 12000 x 12000 PNG), {args.workers} dataloader workers: every sample used or skipped with a "
             "reason, no other exception.", "",
             "| run | used | skipped (reason: count) |", "|---|---:|---|"]  # fmt: skip
    for name in ("training", "training, images split", "training on the built shards"):
        counts = report[name]["counts"]
        reasons = ", ".join(f"{k}: {v}" for k, v in counts.items() if k not in GOOD)
        lines.append(f"| {name} | {counts['ok']} | {reasons} |")
    build = report["build"]
    lines.append(f"| build (`vlmkit data build`) | {build['built']} | "
                 f"{', '.join(f'{k}: {v}' for k, v in build['skipped'].items())} |")  # fmt: skip
    lines.append("| documents of 8 images of 4000 x 3000, truncation keeps 2 | 4 | - (24 images dropped undecoded) |")
    rss = report["peak_rss_mb"]
    children = f"; child processes (preparation, workers) peaked at {rss.get('children')} MB" if args.workers else ""
    lines += ["", f"Peak RSS of the process that decodes: {rss['peak']} MB, {rss['growth']} MB above its "
              f"{rss['before']} MB after imports and the model{children}."]  # fmt: skip
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report["meta"] = {"cpus": os.cpu_count(), "torch": torch.__version__, "pillow": Image.__version__}
    (out / "fuzz_images.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "fuzz_images.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
