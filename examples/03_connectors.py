# %% [markdown]
# # Lesson 3: connectors, from patch features to visual tokens
#
# The connector maps the encoder's `[n, p, d_vision]` patch features into the language model's embedding space,
# `[n, v, d_llm]`: `v` **visual tokens** per image, each of which costs one position in the LM's sequence. The
# paper compares (appendix A.1.3, Tables 3, 4, 11-13):
#
# | connector | vlmkit | tokens per image | paper |
# |---|---|---|---|
# | linear projection of the flattened sequence | `LinearProjection` | fixed (`num_tokens`) | Table 11: 44.5 |
# | mapping network (MAPL, Mañas et al. 2023) | `MappingNetwork` | fixed | Table 11: 51.8 |
# | perceiver resampler (learned pooling) | `PerceiverResampler` | `num_latents` (Idefics2: 64) | Table 11: 60.3 |
# | no pooling: an MLP per patch (LLaVA) | `MLPProjection` | one per patch (729 at 378 px) | Table 3: 51.8 vs 60.3 |
# | pixel shuffle (Idefics3: r = 2, SmolVLM: r = 3 or 4) | `PixelShuffleConnector` | patches / r^2 | after the paper |
#
# Run: `python examples/03_connectors.py`. Figure: `examples/out/03_perceiver_attention.png`.

# %%
import _lesson  # noqa: I001  (first: selects matplotlib's file backend)
import matplotlib.pyplot as plt
import torch
from torch.utils.flop_counter import FlopCounterMode

from vlmkit.connectors import LinearProjection, MappingNetwork, MLPProjection, PerceiverResampler, PixelShuffleConnector
from vlmkit.data import ImageProcessor, pad_images
from vlmkit.data.synthetic import make_sample
from vlmkit.trainability import count_parameters
from vlmkit.vision import TransformersVisionEncoder

torch.manual_seed(0)


def connectors(d_vision: int, d_llm: int, num_patches: int, tokens: int, small: bool) -> dict[str, torch.nn.Module]:
    """The five connectors, pooling to ``tokens`` where they pool (``small``: toy widths, else Idefics2's)."""
    heads, head_dim, kv = (4, 32, 2) if small else (16, 96, 4)
    return {
        "linear": LinearProjection(d_vision, d_llm, num_patches=num_patches, num_tokens=tokens),
        "mapping network": MappingNetwork(
            d_vision, d_llm, num_tokens=tokens, hidden_dim=d_llm if small else 256, depth=4, num_heads=heads
        ),
        "perceiver": PerceiverResampler(
            d_vision,
            d_llm,
            num_latents=tokens,
            depth=3,
            num_heads=heads,
            head_dim=head_dim,
            num_key_value_heads=kv,
            projection_hidden_dim=None if small else 14336,
        ),
        "MLP (no pooling)": MLPProjection(d_vision, d_llm, hidden_dim=None if small else 14336),
        "pixel shuffle r=3": PixelShuffleConnector(d_vision, d_llm, scale_factor=3),
    }


def cost(connector: torch.nn.Module, features: torch.Tensor, mask: torch.Tensor | None) -> tuple[int, int, int]:
    """Visual tokens, parameters and forward FLOPs of one image."""
    counter = FlopCounterMode(display=False)
    with counter:
        tokens = connector(features, mask)
    return tokens.shape[1], count_parameters(connector), counter.get_total_flops()


# %% [markdown]
# ## Patch features of one image, from a tiny SigLIP
#
# A 72 x 72 image (9 x 9 patches of 8 px), 64-d features; the LM of the next lessons is 128 wide.

# %%
encoder = TransformersVisionEncoder(config=_lesson.siglip_config(hidden_size=64, image_size=72)).eval()
processor = ImageProcessor(patch_size=8, max_image_size=72, min_image_size=72)
image = make_sample(0, 3, "color", min_size=72, max_size=72).image
pixels = processor(image)[None]  # [1, 3, 72, 72]
with torch.no_grad():
    features = encoder(pixels)  # [1, 81, 64]
rows, cols = pixels.shape[2] // 8, pixels.shape[3] // 8
grid_mask = torch.ones(1, rows, cols, dtype=torch.bool)
print(f"patch features {tuple(features.shape)} ({rows} x {cols} patches)")

# %% [markdown]
# ## Tokens, parameters and FLOPs per image: toy widths, then Idefics2's
#
# The same classes at Idefics2-8B's widths (SigLIP 1152 -> Mistral 4096, 729 patches at 378 px, 64 tokens, the
# perceiver's 3 layers and 14336-wide projection) are built on PyTorch's `meta` device: shapes without memory,
# so parameters and FLOPs are counted exactly without allocating 3 GB.


# %%
def mask_for(name: str, connector: torch.nn.Module, n_patches: int, grid: torch.Tensor) -> torch.Tensor:
    """Pixel shuffle takes the ``[n, rows, cols]`` grid mask, the others a ``[n, p]`` mask."""
    return grid if isinstance(connector, PixelShuffleConnector) else torch.ones(1, n_patches, dtype=torch.bool)


toy = {}
for name, connector in connectors(64, 128, rows * cols, 16, small=True).items():
    toy[name] = cost(connector, features, mask_for(name, connector, rows * cols, grid_mask))
with torch.device("meta"):
    paper_features = torch.empty(1, 729, 1152)
    paper = {}
    for name, connector in connectors(1152, 4096, 729, 64, small=False).items():
        paper[name] = cost(connector, paper_features, mask_for(name, connector, 729, torch.ones(1, 27, 27).bool()))
LM_FLOPS_PER_TOKEN = 2 * 7.2e9  # a forward pass of Mistral-7B costs about 2 FLOPs per parameter and token
print(
    f"{'connector':>18} | {'toy: tokens':>11} {'params':>9} {'MFLOPs':>8} | "
    f"{'Idefics2 widths: tokens':>23} {'params':>7} {'GFLOPs':>7} {'+ 7B LM on its tokens':>22}"
)
for name in toy:
    (t, p, f), (pt, pp, pf) = toy[name], paper[name]
    print(
        f"{name:>18} | {t:11d} {p:9,d} {f / 1e6:8.2f} | {pt:23d} {pp / 1e6:6.0f}M {pf / 1e9:7.1f} "
        f"{pt * LM_FLOPS_PER_TOKEN / 1e12:17.1f} TFLOPs"
    )

# %% [markdown]
# The perceiver is the largest connector at Idefics2's widths, but it hands the 7B LM 64 tokens instead of 729:
# the LM's cost per visual token (about 2 x 7B FLOPs) dwarfs the connector's own, which is the paper's efficiency
# argument (section 3.3, Finding 4) — and Table 11 finds it also scores best.
#
# ## What the perceiver's latents attend to
#
# Each latent is a learned query; in each layer it attends to the image's patches (and to the latents). We record
# the attention weights of the last layer by watching the real `PerceiverResampler` call PyTorch's attention, on a
# padded batch of two images. The weights are random here (untrained): look at *where* attention can go, not at
# what it picks. Padding patches get exactly zero attention.


# %%
def attention_of(perceiver: PerceiverResampler, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention weights ``[n, heads, latents, patches + latents]`` of the perceiver's last layer."""
    captured = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, **kwargs):
        scores = query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5  # the sdpa call's own q and k
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        captured.append(scores.softmax(-1))
        return sdpa(query, key, value, attn_mask=attn_mask, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = recording
    try:
        with torch.no_grad():
            perceiver(features, mask)
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
    return captured[-1]


small_processor = ImageProcessor(patch_size=8, max_image_size=48, min_image_size=32)
small_pixels = small_processor(make_sample(0, 7, "shape", min_size=24, max_size=48).image)
batch, patch_mask = pad_images([pixels[0], small_pixels], patch_size=8)  # [2, 3, 72, 72], [2, 9, 9]
with torch.no_grad():
    batch_features = encoder(batch, patch_mask)  # [2, 81, 64]
perceiver = connectors(64, 128, 81, 16, small=True)["perceiver"].eval()
weights = attention_of(perceiver, batch_features, patch_mask.flatten(1))  # [2, h, 16, 81 + 16]
on_patches = weights[..., :81].mean(1)  # [2, 16, 81], averaged over heads
padding_attention = on_patches[1][:, ~patch_mask[1].flatten()].abs().max().item()
print(
    f"second image: {int(patch_mask[1].sum())} real patches of 81; largest attention on a padding patch: "
    f"{padding_attention:.1e}"
)
print(f"share of each latent's attention on patches (rest: on latents): {weights[..., :81].sum(-1).mean():.2f}")

fig, axes = plt.subplots(2, 5, figsize=(13, 5.4))
for i in range(2):
    shown = (batch[i].permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1)
    axes[i, 0].imshow(shown)
    axes[i, 0].set_title(f"image {i} ({int(patch_mask[i].sum())} real patches)")
    for j, latent in enumerate((0, 5, 10, 15)):
        axes[i, j + 1].imshow(on_patches[i, latent].reshape(9, 9), cmap="inferno")
        axes[i, j + 1].set_title(f"latent {latent}")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(
    "Perceiver resampler (random weights): attention of 4 of 16 latents over the patch grid; "
    "padding (bottom/right of image 1) gets none"
)
figure = _lesson.save(fig, "03_perceiver_attention.png")

# %% [markdown]
# **What to remember.** Pooling connectors give a fixed number of tokens whatever the resolution; the MLP gives one
# per patch; pixel shuffle divides by `r^2`. Idefics2 pools with a 3-layer perceiver to 64 tokens after an MLP
# projection (Tables 3, 12, 13). Next: lesson 4, where those tokens enter the language model.
