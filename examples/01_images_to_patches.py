# %% [markdown]
# # Lesson 1: images to patches
#
# A vision encoder cuts an image into square patches (here 8 x 8 pixels; SigLIP in Idefics2: 14 x 14) and turns
# each into one vector. Before that, the image processor decides the size the image is seen at. Idefics2 keeps
# each image's **aspect ratio and resolution** (paper section 3.3, Finding 5, Table 5): the longest side is capped
# (980 px), the shortest side is brought towards a target (378 px), both sides rounded to the patch size. Images of
# different shapes then no longer stack into one tensor: a batch is padded bottom/right to its largest height and
# width, and a **patch mask** says which patches are real.
#
# Run: `python examples/01_images_to_patches.py`. Figure: `examples/out/01_patches.png`.

# %%
import _lesson  # noqa: I001  (first: selects matplotlib's file backend)
import matplotlib.pyplot as plt

from vlmkit.data import ImageProcessor, pad_images
from vlmkit.data.synthetic import make_sample

# %% [markdown]
# ## Three images of different shapes
#
# vlmkit's synthetic generator draws coloured shapes on a light background (and words, for reading questions).
# Each sample is a pure function of `(seed, index, task)`, so every run of this lesson sees the same images.

# %%
samples = [
    make_sample(seed=0, index=3, task="color", min_size=40, max_size=96),
    make_sample(seed=0, index=7, task="shape", min_size=24, max_size=64),
    make_sample(seed=0, index=1, task="reading", max_size=48),
]
images = [sample.image for sample in samples]
for sample in samples:
    print(f"{sample.image.width:3d} x {sample.image.height:3d} px  Q: {sample.question!r:40} A: {sample.answer!r}")

# %% [markdown]
# ## Resize, keeping the aspect ratio
#
# `ImageProcessor` applies the rule. We use the toy settings of vlmkit's synthetic task (patch 8, longest side at
# most 96, shortest side towards 32); the same object with `patch_size=14, max_image_size=980,
# min_image_size=378` is Idefics2's processor.

# %%
PATCH = 8
processor = ImageProcessor(patch_size=PATCH, max_image_size=96, min_image_size=32)
processed = [processor(image) for image in images]  # each [3, H, W], normalised to [-1, 1]
for image, pixels in zip(images, processed):
    h, w = pixels.shape[1:]
    print(
        f"{image.width:3d} x {image.height:3d} -> {w:3d} x {h:3d} px = {w // PATCH} x {h // PATCH} patches "
        f"(aspect {image.width / image.height:.2f} -> {w / h:.2f})"
    )

# %% [markdown]
# ## Pad to a batch, with a patch mask
#
# `pad_images` stacks the images into `[n, 3, H, W]` (zeros bottom/right) and returns `patch_mask [n, H/8, W/8]`,
# True on real patches. Every later part (encoder, connector, fusion) uses the mask so that padding never changes
# what a real image produces (lesson 2 shows it numerically).

# %%
pixel_values, patch_mask = pad_images(processed, PATCH)
real = patch_mask.flatten(1).sum(-1)
print(f"padded batch {tuple(pixel_values.shape)}, patch mask {tuple(patch_mask.shape)}")
for i in range(len(processed)):
    print(f"image {i}: {int(real[i]):3d} real patches of {patch_mask[i].numel()} in the padded grid")
print(f"the batch is {1 - real.sum().item() / patch_mask.numel():.0%} padding")

# %% [markdown]
# ## The paper's choice beside the alternative, at Idefics2's sizes
#
# Most VLMs before Idefics2 resized every image to a fixed square (e.g. 384 x 384 for SigLIP). The table counts
# encoder patches for common image sizes under both rules (patch 14); no pixels are processed, `plan` only reads
# the sizes. Keeping the aspect ratio spends patches where the image has pixels: a wide strip of text keeps its
# legibility with fewer patches than the square, a large photo keeps its resolution (at more cost), a small one is
# brought up to 378 px on its short side. The paper finds it keeps performance (Table 5: 72.1 with the aspect ratio
# kept at 378-768 px vs 73.1 with 768 px squares) while letting each image cost what its resolution needs.

# %%
idefics2 = ImageProcessor(patch_size=14, max_image_size=980, min_image_size=378)
square = ImageProcessor(patch_size=14, max_image_size=384, resize_mode="square")
print(f"{'image (w x h)':>16} | {'Idefics2: aspect kept':>24} | {'square 384':>18}")
paper_table = []
for w, h in [(640, 480), (1024, 768), (4000, 3000), (800, 2000), (2000, 300), (200, 150)]:
    kept, sq = idefics2.plan(h, w), square.plan(h, w)
    kept_patches = (kept.height // 14) * (kept.width // 14)
    square_patches = (sq.height // 14) * (sq.width // 14)
    paper_table.append(((w, h), (kept.width, kept.height), kept_patches, square_patches))
    print(
        f"{w:>7} x {h:<6} | {kept.width:4d} x {kept.height:<4d} {kept_patches:5d} patches | "
        f"{sq.width} x {sq.height} {square_patches:4d}"
    )

# %% [markdown]
# ## Figure: each image, its patch grid in the padded batch, and the mask

# %%
fig, axes = plt.subplots(len(images), 3, figsize=(10, 2.6 * len(images)))
height, width = pixel_values.shape[2:]
for i, image in enumerate(images):
    axes[i, 0].imshow(image)
    axes[i, 0].set_title(f"original {image.width} x {image.height}")
    shown = (pixel_values[i].permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1)  # undo the [-1, 1] normalisation
    axes[i, 1].imshow(shown, extent=(0, width, height, 0))
    for x in range(0, width + 1, PATCH):
        axes[i, 1].axvline(x, color="k", lw=0.4)
    for y in range(0, height + 1, PATCH):
        axes[i, 1].axhline(y, color="k", lw=0.4)
    axes[i, 1].set_title(f"in the padded batch {width} x {height}")
    axes[i, 2].imshow(patch_mask[i], cmap="gray", vmin=0, vmax=1)
    axes[i, 2].set_title(f"patch mask: {int(real[i])} real (white)")
    for ax in axes[i]:
        ax.set_xticks([])
        ax.set_yticks([])
fig.suptitle("Aspect-ratio preserving processing, padding and the patch mask (lesson 1)")
figure = _lesson.save(fig, "01_patches.png")

# %% [markdown]
# **What to remember.** Processed sides are multiples of the patch size and keep the aspect ratio (up to that
# rounding); a batch is padded to its largest sides, and `patch_mask` marks the real patches. Next: lesson 2, what
# the vision encoder does with them.
