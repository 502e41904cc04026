# %% [markdown]
# # Lesson 9: data, from files to packed batches
#
# Idefics2 trains on a **mixture** of sources (section 4.1): interleaved web documents (OBELICS), image-text pairs
# (LAION, with synthetic captions), PDF documents (OCR-IDL, PDFA, Rendered Text), later The Cauldron's
# conversations (section 4.2); each source has its own weight, length budget and image sizes. At scale the data
# lives in **webdataset shards** (tar files streamed from disk or object storage). And samples of very different
# lengths are **packed** several per row so no compute is spent on padding, with attention kept inside each sample.
#
# - `vlmkit data synth` / `vlmkit data build` (here through `vlmkit.data.build.main`, the same code): JSONL +
#   images -> `shard-000000.tar`, ... + `manifest.json`.
# - `ShardSource` (shards) and `SyntheticSource` (generated on the fly) are mixture sources; `MixtureDataModule`
#   draws from them by weight, renders every sample through the model's processor and packs rows (`pack_length`).
#
# Run: `python examples/09_data.py`. Figure: `examples/out/09_packing.png`.

# %%
import _lesson  # noqa: I001  (first: selects matplotlib's file backend)
import tempfile
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from vlmkit.attention import block_diagonal_causal_mask
from vlmkit.data import MixtureDataModule, ShardSource, SyntheticSource
from vlmkit.data.build import main as vlmkit_data

torch.manual_seed(0)
NUM_SAMPLES, NUM_BATCHES = (24, 4) if _lesson.FAST else (60, 20)
workdir = Path(tempfile.mkdtemp(prefix="vlmkit_lesson9_"))

# %% [markdown]
# ## Build shards
#
# `synth` writes synthetic conversations as a folder of PNG files + `data.jsonl` (the format `build` reads); `build`
# validates every sample and writes tar shards (at most 10 samples each here; 10,000 by default) and a manifest.

# %%
vlmkit_data(["synth", "--format", "conversation", "--num", str(NUM_SAMPLES), "--output", str(workdir / "raw")])
manifest = vlmkit_data(
    [
        "build",
        "--input",
        str(workdir / "raw"),
        "--output",
        str(workdir / "shards"),
        "--format",
        "conversation",
        "--max-samples-per-shard",
        "10",
    ]
)
for shard in manifest["shards"]:
    print(f"  {shard['name']}: {shard['num_samples']} samples, {shard['num_bytes']:,} bytes")
print(f"manifest: {manifest['num_samples']} samples of format {manifest['format']!r}, skipped {manifest['skipped']}")

# %% [markdown]
# ## Mix three sources
#
# The shards (weight 0.5) with generated image-text pairs (0.25) and PDF-like pages (0.25). Each source renders at
# its own length budget and image size, as the paper's stages do (pairs at 1536 tokens, PDFs at 1024, ...).

# %%
vlm = _lesson.tiny_vlm(num_latents=8)
weights = {"conversation": 0.5, "synthetic_pair": 0.25, "synthetic_pdf": 0.25}
sources = [
    ShardSource(
        str(workdir / "shards"),
        "conversation",
        weight=0.5,
        max_length=192,
        max_image_size=64,
        shuffle_buffer=8,
        resampled=True,
    ),
    SyntheticSource("pair", weight=0.25, max_length=192, max_image_size=64),
    SyntheticSource("pdf", weight=0.25, max_length=192, max_image_size=96),
]
padded = MixtureDataModule(sources=sources, batch_size=4, seed=0)
packed = MixtureDataModule(sources=sources, batch_size=2, seed=0, pack_length=384)
for data in (padded, packed):
    data.connect(vlm)
    data.setup("fit")
padded_batches = [b for _, b in zip(range(NUM_BATCHES), padded.train_dataloader())]
packed_batches = [b for _, b in zip(range(NUM_BATCHES), packed.train_dataloader())]
shares = padded.train_stats.proportions()
print("realised share of each source (weights in brackets):")
for name, share in shares.items():
    print(f"  {name:>15}: {share:.2f} ({weights[name]:.2f})")

# %% [markdown]
# ## Pack rows
#
# Without packing a batch is padded to its longest sample; with `pack_length=384` samples are concatenated into
# rows of at most 384 tokens, each token tagged with its sample (`segment_ids`) and positions restarting per sample.


# %%
def fill(batches: list[dict]) -> float:
    """Share of real tokens among the positions the LM computes."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return real / sum(b["input_ids"].numel() for b in batches)


samples_per_row = Counter(int(row.max()) + 1 for b in packed_batches for row in b["segment_ids"])
longest_row = max(b["input_ids"].shape[1] for b in packed_batches)
print(f"padded batches: {fill(padded_batches):.0%} of the LM's positions are real tokens")
print(
    f"packed rows   : {fill(packed_batches):.0%} real; samples per row {dict(sorted(samples_per_row.items()))}; "
    f"longest row {longest_row} <= pack_length 384"
)

# %% [markdown]
# ## Packing changes nothing for a sample
#
# The LM gets a block-diagonal causal mask (`vlmkit.attention.block_diagonal_causal_mask`): a token attends only to
# earlier tokens of its own sample. So the first sample of a packed row gets the same logits as when run alone.

# %%
batch = packed_batches[0]
vlm.eval()
with torch.no_grad():
    logits = vlm(
        batch["input_ids"],
        batch["attention_mask"],
        batch["pixel_values"],
        batch["patch_mask"],
        position_ids=batch["position_ids"],
        segment_ids=batch["segment_ids"],
    ).logits
    first = batch["segment_ids"][0] == 0
    ids = batch["input_ids"][0, first][None]
    n_images = int((ids == vlm.image_token_id).sum()) // 8  # 8 visual tokens per image, images in text order
    alone = vlm(ids, torch.ones_like(ids), batch["pixel_values"][:n_images], batch["patch_mask"][:n_images]).logits
packing_diff = (logits[0, first] - alone[0]).abs().max().item()
print(
    f"first sample of row 0 ({int(first.sum())} tokens, {n_images} images): max |packed - alone| logits = "
    f"{packing_diff:.1e}"
)

# %% [markdown]
# ## Figure: the block-diagonal mask of a packed row

# %%
mask = block_diagonal_causal_mask(batch["segment_ids"][:1], torch.float32)[0, 0] == 0  # True = may attend
fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [2, 1]})
axes[0].imshow(mask, cmap="Greys", interpolation="nearest")
axes[0].set_xlabel("key token")
axes[0].set_ylabel("query token")
axes[0].set_title(f"packed row 0: {int(batch['segment_ids'][0].max()) + 1} samples, causal within each")
axes[1].bar(["padded", "packed"], [fill(padded_batches), fill(packed_batches)], color=["tab:gray", "tab:green"])
axes[1].set_ylim(0, 1)
axes[1].set_title("share of real tokens")
fig.suptitle("Sequence packing (lesson 9)")
figure = _lesson.save(fig, "09_packing.png")

# %% [markdown]
# **What to remember.** Shards + manifest (`vlmkit data build`), weighted sources with their own budgets
# (`MixtureDataModule(sources=[...])`), and `pack_length` for dense rows; all of it is recipe YAML
# (`recipes/pretrain_*.yaml`). Next: lesson 10, real checkpoints.
