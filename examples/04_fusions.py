# %% [markdown]
# # Lesson 4: the two fusions, where the visual tokens go
#
# The paper compares two ways for visual tokens to enter a language model (section 3.2, Table 3, Finding 2):
#
# - **Fully autoregressive** (Idefics2, LLaVA, `FullyAutoregressiveFusion`): the visual tokens are *spliced into the
#   input sequence* in place of `<image>` placeholders, between `<fake_token_around_image>` markers; the LM
#   attends to them like to words. No new parameters; each visual token costs one sequence position.
# - **Cross-attention** (Flamingo, Idefics1, `CrossAttentionFusion`): each image is one `<image>` marker in the text;
#   new gated cross-attention blocks inserted before every k-th decoder layer let the text that *follows* an image
#   attend to its visual tokens. The gates start at `tanh(0) = 0`, so the LM starts exactly as it was.
#
# Paper, Table 3: frozen backbones, cross-attention 66.7 vs fully autoregressive 60.3; with LoRA on the backbones,
# fully autoregressive 69.5 vs cross-attention 67.3 — Idefics2 picks fully autoregressive.
#
# Run: `python examples/04_fusions.py`. Figure: `examples/out/04_cross_attention.png`.

# %%
import _lesson  # noqa: I001  (first: selects matplotlib's file backend)
import matplotlib.pyplot as plt
import torch

from vlmkit.data import VLMCollator, VLMProcessor
from vlmkit.data.synthetic import make_sample
from vlmkit.fusion import CrossAttentionFusion, FullyAutoregressiveFusion, GatedCrossAttentionBlock
from vlmkit.text import IMAGE_TOKEN, Turn
from vlmkit.trainability import count_parameters

torch.manual_seed(0)

# %% [markdown]
# ## One conversation with two images, rendered for each fusion
#
# `VLMProcessor.from_model` builds the processor that matches a model: its tokenizer, its encoder's normalisation and
# how many placeholders an image takes in *that* model's sequence.

# %%
models = {
    "fully autoregressive": _lesson.tiny_vlm(fusion=FullyAutoregressiveFusion(), num_latents=8).eval(),
    "cross-attention": _lesson.tiny_vlm(
        fusion=CrossAttentionFusion(every_n_layers=1, num_heads=4, media_masking="preceding")
    ).eval(),
}
first, second = make_sample(0, 3, "color", max_size=64), make_sample(0, 4, "color", max_size=64)
turns = [
    Turn("user", [{"type": "image"}, first.question]),
    Turn("assistant", [first.answer]),
    Turn("user", [{"type": "image"}, second.question]),
    Turn("assistant", [second.answer]),
]


def condensed(tokens: list[str]) -> str:
    """The token sequence with each run of ``<image>`` placeholders written once with its count."""
    out, i = [], 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] == tokens[i] == IMAGE_TOKEN:
            j += 1
        out.append(f"{IMAGE_TOKEN} x {j - i}" if j - i > 1 else tokens[i])
        i = max(j, i + 1)
    return " ".join(out)


rendered = {}
for name, vlm in models.items():
    processor = VLMProcessor.from_model(vlm, max_image_size=64, min_image_size=32)
    sample = processor([first.image, second.image], turns)
    rendered[name] = sample
    tokens = vlm.tokenizer.convert_ids_to_tokens(sample["input_ids"].tolist())
    placeholders = int((sample["input_ids"] == vlm.image_token_id).sum())
    print(
        f"\n{name}: {len(tokens)} tokens, {placeholders} image placeholders, "
        f"{count_parameters(vlm.fusion):,} fusion parameters"
    )
    print("  " + condensed(tokens).replace("\n", "\\n"))

# %% [markdown]
# (`Ġ` marks a word that starts with a space, as byte-level BPE tokenizers write it.) With the perceiver's 8
# latents each image is 8 `<image>` placeholders in the fully autoregressive sequence and one
# marker with cross-attention: the sequence is shorter, but the blocks are new parameters (in the paper's comparison
# on Mistral-7B, 1.3B more trainable parameters than the fully autoregressive model, section 3.2).
#
# ## Cross-attention starts as the language model alone
#
# With gates at 0, every block adds `tanh(0) * ... = 0`, so the logits equal those of the plain LM on the same ids.

# %%
ca = models["cross-attention"]
collate = VLMCollator(ca.tokenizer.pad_token_id, ca.vision_encoder.patch_size)
batch = collate([rendered["cross-attention"]])
allowed_seen = []
hook = ca.fusion.blocks[0].register_forward_hook(lambda block, args, out: allowed_seen.append(args[1]))
with torch.no_grad():
    with_images = ca(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits
    embeds = ca.language_model.get_input_embeddings()(batch["input_ids"])
    lm_alone = ca.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
hook.remove()
gate_zero_diff = (with_images - lm_alone).abs().max().item()
print(
    f"gates {[round(torch.tanh(b.attn_gate).item(), 2) for b in ca.fusion.blocks]}: max |logits with images - "
    f"LM alone| = {gate_zero_diff:.1e}"
)
for block in ca.fusion.blocks:  # what training does: the gates open
    torch.nn.init.constant_(block.attn_gate, 0.5)
    torch.nn.init.constant_(block.ff_gate, 0.5)
with torch.no_grad():
    opened = ca(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits
first_image = int((batch["input_ids"][0] == ca.image_token_id).nonzero()[0])
before_diff = (opened - lm_alone)[0, :first_image].abs().max().item()
after_diff = (opened - lm_alone)[0, first_image:].abs().max().item()
print(
    f"gates at tanh(0.5) = {torch.tanh(torch.tensor(0.5)):.2f}: text before the first image unchanged "
    f"(max |diff| {before_diff:.1e}), text after it changed (max |diff| {after_diff:.2f})"
)

# %% [markdown]
# ## Media masking: which image each text token sees
#
# The blocks receive an `allowed [b, s, m]` mask (text token x visual token). With `media_masking="preceding"`
# (Flamingo) a token sees only the last image before it; `"all_preceding"` lets it see every earlier image. We
# record the mask the first block gets, for both settings.

# %%
masks = {"preceding": allowed_seen[0][0]}
all_preceding = _lesson.tiny_vlm(
    fusion=CrossAttentionFusion(every_n_layers=1, num_heads=4, media_masking="all_preceding")
).eval()
seen = []
hook = all_preceding.fusion.blocks[0].register_forward_hook(lambda block, args, out: seen.append(args[1]))
with torch.no_grad():
    all_preceding(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"])
hook.remove()
masks["all_preceding"] = seen[0][0]
num_tokens = masks["preceding"].shape[-1] // 2  # visual tokens per image
tokens = ca.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
sees = {}
for name, allowed in masks.items():
    per_image = allowed.reshape(allowed.shape[0], 2, num_tokens).any(-1)  # [s, images]
    sees[name] = per_image
    last = per_image[-1].nonzero().flatten().tolist()
    print(
        f"{name:>13}: the last token sees image(s) {last}; tokens before image 0 see none: "
        f"{not per_image[:first_image].any().item()}"
    )

fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [3, 3, 1.2]})
for ax, (name, allowed) in zip(axes, masks.items()):
    ax.imshow(allowed.T.float(), aspect="auto", cmap="Blues", interpolation="nearest")
    ax.set_xticks(range(len(tokens)))
    ax.set_xticklabels([t.replace("\n", "\\n") for t in tokens], rotation=90, fontsize=6)
    ax.set_xlabel("text token")
    ax.set_ylabel("visual token (image 0 top, image 1 bottom)")
    ax.set_title(f"media_masking={name!r}")
gates = [torch.tanh(b.attn_gate).item() for b in ca.fusion.blocks]
positions = torch.arange(len(gates)).float()
axes[2].bar(positions - 0.2, [0.0] * len(gates), width=0.4, color="gray", label="at init: tanh(0) = 0")
axes[2].bar(positions + 0.2, gates, width=0.4, color="tab:blue", label="opened: tanh(0.5)")
for x in positions.tolist():
    axes[2].text(x - 0.2, 0.01, "0", ha="center", fontsize=8)
axes[2].set_xticks(positions.tolist(), [f"block {i}" for i in range(len(gates))])
axes[2].set_ylim(0, 1)
axes[2].set_title("attention gates")
axes[2].legend(fontsize=7)
fig.suptitle(
    f"Cross-attention fusion: which visual tokens each text token may attend to, and the gates "
    f"({GatedCrossAttentionBlock.__name__} before each layer)"
)
figure = _lesson.save(fig, "04_cross_attention.png")

# %% [markdown]
# **What to remember.** Fully autoregressive: visual tokens *are* part of the sequence (`<image>` x tokens per image),
# no new weights. Cross-attention: one marker per image, new gated blocks, the LM untouched at init; which image a
# token sees is the media mask. Next: lesson 5, training a composed model.
