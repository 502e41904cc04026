# %% [markdown]
# # Lesson 2: vision encoders
#
# `TransformersVisionEncoder` runs a transformers vision tower (SigLIP, CLIP, the Idefics2/Idefics3 towers) on a
# padded batch and returns one feature per patch, `[n, p, d]`. Two things make it work on images of any shape
# (paper section 3.3):
#
# 1. **Positions for any grid.** SigLIP was pretrained on one square grid (27 x 27 patches at 384 px; here 8 x 8).
#    An image of another shape needs positions for its own `rows x cols` grid: either **interpolate** the pretrained
#    table bicubically (what the paper describes, following Dehghani et al. 2023) or **bucket** each patch's
#    fractional coordinate onto the pretrained grid (what the released Idefics2 vision tower does).
# 2. **Padding never leaks.** Each image attends only to its own real patches (block-diagonal attention over the
#    padded batch) and gets the positions of its own grid, so its features are those it gets alone. With
#    `patch_packing=True` the real patches of all images run as one sequence with no padding at all (NaViT-style).
#
# Run: `python examples/02_vision_encoders.py`. Figure: `examples/out/02_positions.png`.

# %%
import _lesson  # noqa: I001  (first: selects matplotlib's file backend)
import matplotlib.pyplot as plt
import torch

from vlmkit.data import ImageProcessor, pad_images
from vlmkit.data.synthetic import make_sample
from vlmkit.vision import TransformersVisionEncoder
from vlmkit.vision.transformers_encoder import bucket_position_ids, interpolate_positions

torch.manual_seed(0)

# %% [markdown]
# ## A tiny SigLIP with random weights
#
# 2 layers of width 64, patch 8, pretrained grid 8 x 8 (image_size 64). The same class loads a real checkpoint
# with `name_or_path="google/siglip-so400m-patch14-384"`; nothing below depends on the size.

# %%
config = _lesson.siglip_config(hidden_size=64, layers=2, image_size=64, patch_size=8)
encoders = {
    scheme: TransformersVisionEncoder(config=config, position_embedding=scheme).eval()
    for scheme in ("interpolate", "bucket")
}
# same weights for both schemes: only how positions are computed differs
encoders["bucket"].load_state_dict(encoders["interpolate"].state_dict())
print(
    f"encoder: {encoders['bucket'].hidden_size}-d features, patch {encoders['bucket'].patch_size}, "
    f"pretrained grid {encoders['bucket'].grid_side} x {encoders['bucket'].grid_side}"
)

# %% [markdown]
# ## Positions for a 4 x 10 grid: interpolated vs bucketed
#
# For a grid the table was not trained on, bucketing reuses pretrained positions as they are (each patch takes
# the position of the pretrained cell its fractional coordinate falls into; some repeat), interpolation
# resamples the table into new in-between positions.
# The table here is random (no pretraining): the figure shows the mechanics, not a pretrained table's geometry.

# %%
rows, cols = 4, 10
table = encoders["bucket"].backbone.embeddings.position_embedding.weight.detach()  # [64, d]
side = encoders["bucket"].grid_side
ids = bucket_position_ids(torch.tensor([[rows, cols]]), rows, cols, side)[0]  # [rows * cols] ids into the table
bucketed = table[ids]  # [rows * cols, d]
interpolated = interpolate_positions(table.reshape(side, side, -1), rows, cols).reshape(rows * cols, -1)
print(f"bucket ids of row 0: {ids[:cols].tolist()}  (pretrained columns: 0..{side - 1})")
print(f"distinct positions used: bucketed {len(set(ids.tolist()))}, interpolated {rows * cols} (all new)")
cos = torch.nn.functional.cosine_similarity(bucketed, interpolated, dim=-1)
print(f"cosine(bucketed, interpolated) per patch: mean {cos.mean():.2f}, min {cos.min():.2f}")

# %% [markdown]
# ## An image alone, and the same image in a padded batch
#
# We encode a small image alone, then inside a batch padded to a larger image's size, and compare the features of
# its real patches. With `patch_packing=True` we encode the batch once more as one sequence of real patches.

# %%
processor = ImageProcessor(patch_size=8, max_image_size=96, min_image_size=32)
small = processor(make_sample(0, 7, "shape", min_size=24, max_size=64).image)  # [3, 40, 48]
large = processor(make_sample(0, 3, "color", min_size=40, max_size=96).image)  # [3, 64, 96]
pixel_values, patch_mask = pad_images([large, small], patch_size=8)
n_real = int(patch_mask[1].sum())
max_diff = {}
with torch.no_grad():
    for scheme, encoder in encoders.items():
        alone = encoder(small[None])[0]  # [p_small, d]
        batched = encoder(pixel_values, patch_mask)[1]  # [p_padded, d]
        in_batch = batched[patch_mask[1].flatten()]  # its real patches, row-major
        max_diff[scheme] = (alone - in_batch).abs().max().item()
    packed_encoder = TransformersVisionEncoder(config=config, position_embedding="bucket", patch_packing=True).eval()
    packed_encoder.load_state_dict(encoders["bucket"].state_dict())
    packed = packed_encoder(pixel_values, patch_mask)[1][patch_mask[1].flatten()]
    max_diff["bucket, patch_packing"] = (encoders["bucket"](small[None])[0] - packed).abs().max().item()
    # what happens without the mask: padding becomes part of the image
    unmasked = encoders["bucket"](pixel_values)[1].reshape(*patch_mask.shape[1:], -1)
    h, w = small.shape[1] // 8, small.shape[2] // 8
    no_mask_diff = (encoders["bucket"](small[None])[0] - unmasked[:h, :w].flatten(0, 1)).abs().max().item()
print(f"small image: {tuple(small.shape)} = {n_real} patches, padded in the batch to {tuple(pixel_values.shape[2:])}")
for scheme, diff in max_diff.items():
    print(f"  {scheme:22}: alone vs in the padded batch, max |difference| = {diff:.1e}  -> the same features")
print(f"  without the patch mask  : max |difference| = {no_mask_diff:.2f}  -> padding changes the image's features")

# %% [markdown]
# ## Figure: which pretrained position each patch uses

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
im = axes[0].imshow(ids.reshape(rows, cols), cmap="viridis")
for r in range(rows):
    for c in range(cols):
        axes[0].text(c, r, int(ids[r * cols + c]), ha="center", va="center", fontsize=7, color="w")
axes[0].set_title(f"bucket: pretrained id per patch ({rows} x {cols})")
axes[1].imshow(
    interpolated[:, :3]
    .reshape(rows, cols, 3)
    .sub(interpolated[:, :3].min())
    .div(interpolated[:, :3].max() - interpolated[:, :3].min())
)
axes[1].set_title("interpolate: 3 channels of the new positions")
axes[2].imshow(cos.reshape(rows, cols), cmap="magma", vmin=0, vmax=1)
axes[2].set_title("cosine(bucketed, interpolated)")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(f"Positions for a {rows} x {cols} grid; the encoder was pretrained on {side} x {side} (lesson 2)")
figure = _lesson.save(fig, "02_positions.png")

# %% [markdown]
# **What to remember.** Both position schemes give every image positions for its own grid; an image's features do
# not depend on the batch it is in (zero difference up to float rounding), with padding or with patch packing;
# without the mask they would. Idefics2's released tower buckets; `position_embedding=None` picks a family's own
# scheme. Next: lesson 3, turning these features into a few visual tokens.
