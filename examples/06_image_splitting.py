# %% [markdown]
# # Lesson 6: image splitting and the token budget
#
# A perceiver gives every image 64 visual tokens whatever its resolution (lesson 3): cheap, but small text in a
# large image may not survive the pooling. Idefics2's answer (section 3.4, Finding 6) is **image splitting**: an
# image becomes its 4 quadrants, each resized to the image's processed size, followed by the image itself: 5 views,
# 5 x 64 = 320 visual tokens. It is the same model (the same weights); only the inference differs, and the user
# decides per image. Table 9: TextVQA 70.4 with 64 tokens, 73.0 with 320. Idefics3 and SmolVLM later tile
# instead: a grid of fixed-size tiles chosen from the resolution, plus the image (`tile_size`).
#
# Run: `python examples/06_image_splitting.py`. Figure: `examples/out/06_split.png`.

# %%
import _lesson  # noqa: I001  (first: selects matplotlib's file backend)
import re

import matplotlib.pyplot as plt
import torch

from vlmkit.data import VLMProcessor
from vlmkit.data.synthetic import make_sample
from vlmkit.model import token_budget
from vlmkit.text import Turn

torch.manual_seed(0)

# %% [markdown]
# ## Split one image with the model's processor
#
# A tiny model (perceiver with 8 latents) and its processor (longest side at most 64 px).

# %%
vlm = _lesson.tiny_vlm(num_latents=8).eval()
processor = VLMProcessor.from_model(vlm, max_image_size=64, min_image_size=32)
sample = make_sample(0, 11, "count", min_size=64, max_size=96)
print(f"image {sample.image.width} x {sample.image.height}: {sample.question!r} -> {sample.answer!r}")
views = processor.image_processor.process(sample.image, split_images=True)  # 4 crops, then the whole image
print(f"split: {len(views)} views of {tuple(views[0].shape[1:])} each (crops row-major, then the whole image)")

# %% [markdown]
# ## What it costs: counted by the model, and rendered by the processor
#
# `vlm.token_budget(h, w, split_images=...)` counts encoder patches and visual tokens from the same sizing rules the
# processor uses; the rendered sample must hold exactly that many `<image>` placeholders. The split image also gets
# `<row_i_col_j>` / `<global-img>` markers before each view (crop markers, as Idefics3 writes them).

# %%
budgets, placeholders = {}, {}
for split in (False, True):
    budgets[split] = vlm.token_budget(sample.image.height, sample.image.width, 64, 32, split_images=split)
    rendered = processor(
        [sample.image],
        [Turn("user", [{"type": "image"}, sample.question])],
        add_generation_prompt=True,
        split_images=split,
    )
    placeholders[split] = int((rendered["input_ids"] == vlm.image_token_id).sum())
    b = budgets[split]
    print(
        f"split_images={split!s:5}: {b.views} view(s) of {b.processed_size}, {b.encoder_patches} encoder patches, "
        f"{b.visual_tokens} visual tokens; the processor rendered {placeholders[split]} placeholders, "
        f"{len(rendered['input_ids'])} tokens in all"
    )
    if split:
        text = vlm.tokenizer.decode(rendered["input_ids"])
        print("  view markers in the text:", re.findall(r"<row_\d+_col_\d+>|<global-img>", text))

# %% [markdown]
# ## The cost table at the paper's sizes
#
# `token_budget` with Idefics2's settings (patch 14, longest side 980, shortest 378; 64 tokens per view) beside
# the alternatives: no pooling (one token per patch, as LLaVA) and Idefics3's tiling (364 px tiles of 26 x 26
# patches, pixel shuffle r = 2: 169 tokens per tile, images first resized to 1456 px on the longest side).

# %%
print(
    f"{'image (w x h)':>14} | {'Idefics2':>8} {'+ split':>8} | {'no pooling':>10} {'+ split':>8} | "
    f"{'Idefics3 tiles':>15}"
)
paper_rows = []


def shuffled(rows: int, cols: int) -> int:
    """Idefics3's pixel shuffle, r = 2: one token per 2 x 2 block of patches (26 x 26 patches per tile -> 169)."""
    return -(-rows // 2) * -(-cols // 2)


for w, h in [(640, 480), (1024, 768), (800, 2000), (2000, 300)]:
    perceiver = [token_budget(h, w, 14, lambda p: 64, 980, 378, split_images=s).visual_tokens for s in (False, True)]
    per_patch = [token_budget(h, w, 14, lambda p: p, 980, 378, split_images=s).visual_tokens for s in (False, True)]
    tiled = token_budget(h, w, 14, None, 1456, 378, split_images=True, tile_size=364, tokens_for_grid=shuffled)
    paper_rows.append(((w, h), perceiver, per_patch, tiled.visual_tokens))
    print(
        f"{w:>6} x {h:<5} | {perceiver[0]:8d} {perceiver[1]:8d} | {per_patch[0]:10d} {per_patch[1]:8d} | "
        f"{tiled.visual_tokens:6d} ({tiled.grid[0]} x {tiled.grid[1]} + 1)"
    )

# %% [markdown]
# Idefics2 pays 64 or 320 tokens per image whatever its size; without pooling the same image would cost 10 to 60
# times more, and splitting multiplies that by 5.
#
# ## Figure: the 4 crops and the image, as the encoder sees them

# %%
fig, axes = plt.subplots(1, 6, figsize=(15, 2.8))
axes[0].imshow(sample.image)
axes[0].set_title(f"original {sample.image.width} x {sample.image.height}")
names = ["crop row 1 col 1", "crop row 1 col 2", "crop row 2 col 1", "crop row 2 col 2", "the whole image"]
for ax, view, name in zip(axes[1:], views, names):
    ax.imshow((view.permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1))
    ax.set_title(f"{name}\n{view.shape[2]} x {view.shape[1]}: {budgets[False].visual_tokens} tokens", fontsize=9)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(
    f"Image splitting: {budgets[True].views} views, {budgets[True].visual_tokens} visual tokens instead of "
    f"{budgets[False].visual_tokens} (lesson 6)",
    y=1.1,
)
figure = _lesson.save(fig, "06_split.png")

# %% [markdown]
# **What to remember.** `split_images` is a per-call switch (`VLMProcessor(..., split_images=True)`); training
# data modules split a share of images (`image_splitting: 0.5` in a recipe; the paper splits 50% in fine-tuning) and
# evaluation can split every image (`eval_image_splitting`). Next: lesson 7, what trains when fine-tuning.
