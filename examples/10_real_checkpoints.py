# %% [markdown]
# # Lesson 10: real checkpoints, Idefics2 in and out
#
# Everything so far used vlmkit's parts from random weights. `vlmkit.interop.import_idefics2` builds the same parts
# from a transformers **Idefics2** checkpoint (`HuggingFaceM4/idefics2-8b` on a machine with network): the vision
# tower with bucketed positions, the perceiver with its MLP projection, fully autoregressive fusion, the Mistral LM,
# the checkpoint's tokenizer and chat template — every weight mapped, none initialised at random. `export_idefics2`
# writes a vlmkit model back as a transformers checkpoint (LoRA/DoRA merged first), so a model fine-tuned with
# vlmkit loads with `Idefics2ForConditionalGeneration.from_pretrained`.
#
# No download here: we build a tiny transformers Idefics2 with random weights locally, save it, and check that
# vlmkit computes exactly what transformers computes.
#
# Run: `python examples/10_real_checkpoints.py`. Figure: `examples/out/10_logits.png`.

# %%
import _lesson  # noqa: I001  (first: selects matplotlib's file backend)
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from transformers import Idefics2Config, Idefics2ForConditionalGeneration, Idefics2ImageProcessor, Idefics2Processor

from vlmkit.data.synthetic import make_sample
from vlmkit.interop import (
    IDEFICS2_CHAT_TEMPLATE,
    Idefics2ProcessorSettings,
    export_idefics2,
    from_idefics2_inputs,
    import_idefics2,
)
from vlmkit.text import build_synthetic_tokenizer
from vlmkit.trainability import parameter_table

workdir = Path(tempfile.mkdtemp(prefix="vlmkit_lesson10_"))
PATCH, LATENTS = 8, 8

# %% [markdown]
# ## A tiny Idefics2, built and saved with transformers
#
# Idefics2-8B's architecture at toy widths: a 2-layer vision tower (patch 8), a 2-layer perceiver with 8 latents, a
# 2-layer Mistral; vlmkit's offline tokenizer stands in for Mistral's (the processor adds the image tokens).

# %%
tokenizer = build_synthetic_tokenizer()
processor = Idefics2Processor(
    Idefics2ImageProcessor(do_image_splitting=False, size={"shortest_edge": 24, "longest_edge": 48}),
    tokenizer,
    image_seq_len=LATENTS,
    chat_template=IDEFICS2_CHAT_TEMPLATE,
)
config = Idefics2Config(
    vision_config={
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "patch_size": PATCH,
        "image_size": 48,
    },
    perceiver_config={
        "hidden_size": 64,
        "resampler_n_latents": LATENTS,
        "resampler_depth": 2,
        "resampler_n_heads": 4,
        "resampler_head_dim": 16,
        "num_key_value_heads": 2,
    },
    text_config={
        "model_type": "mistral",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    },
    image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
)
torch.manual_seed(0)
reference = Idefics2ForConditionalGeneration(config).eval()
with torch.no_grad():  # larger random weights than the default init, so that every part visibly matters
    for param in reference.parameters():
        param.copy_(torch.randn_like(param) * (0.5 if param.ndim == 1 else param.shape[-1] ** -0.5))
reference.save_pretrained(workdir / "idefics2")
processor.save_pretrained(workdir / "idefics2")
print(f"saved a {sum(p.numel() for p in reference.parameters()):,}-parameter Idefics2 to {workdir / 'idefics2'}")

# %% [markdown]
# ## Import it as vlmkit parts

# %%
vlm = import_idefics2(str(workdir / "idefics2")).eval()
print(parameter_table(vlm, ("vision_encoder", "connector", "fusion", "language_model")))
print(
    f"parts: {type(vlm.vision_encoder).__name__} (positions: {vlm.vision_encoder.position_embedding}), "
    f"{type(vlm.connector).__name__}, {type(vlm.fusion).__name__}, {type(vlm.language_model).__name__}"
)

# %% [markdown]
# ## Same inputs, same logits
#
# transformers' processor prepares two prompts with images of different sizes; `from_idefics2_inputs` turns its
# `pixel_values [b, N, 3, H, W]` + `pixel_attention_mask` into vlmkit's `[n, 3, H, W]` + `patch_mask`.

# %%
images = [make_sample(0, 3, "color", max_size=48).image, make_sample(0, 7, "shape", min_size=24, max_size=40).image]
messages = [
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
    for q in ("What color is the triangle?", "Which shape is purple?")
]
prompts = [processor.apply_chat_template(m, add_generation_prompt=True) for m in messages]
batch = processor(images=[[images[0]], [images[1]]], text=prompts, padding=True, return_tensors="pt")
pixel_values, patch_mask = from_idefics2_inputs(batch["pixel_values"], batch["pixel_attention_mask"], PATCH)
with torch.no_grad():
    expected = reference(**batch).logits
    got = vlm(batch["input_ids"], batch["attention_mask"], pixel_values, patch_mask).logits
real = batch["attention_mask"].bool()
logits_diff = (got[real] - expected[real]).abs().max().item()
print(f"logits of {int(real.sum())} real tokens: max |vlmkit - transformers| = {logits_diff:.1e}")

processor.tokenizer.padding_side = "left"  # generation continues every row from its last token
with torch.no_grad():
    left = processor(images=[[images[0]], [images[1]]], text=prompts, padding=True, return_tensors="pt")
    want = reference.generate(**left, max_new_tokens=6, do_sample=False, eos_token_id=None, min_length=0)
    want = want[:, left["input_ids"].shape[1] :]
    left_pixels, left_mask = from_idefics2_inputs(left["pixel_values"], left["pixel_attention_mask"], PATCH)
    mine = vlm.generate(
        left["input_ids"], left["attention_mask"], left_pixels, left_mask, max_new_tokens=6, stop_token_ids=[]
    )
generation_equal = torch.equal(mine, want)
print(f"greedy generation, 6 tokens each: identical to transformers' generate: {generation_equal}")

# %% [markdown]
# ## Export back to transformers
#
# `export_idefics2` writes config, safetensors weights, processor and tokenizer; transformers loads them with no
# missing or unexpected key, and every tensor equals the original checkpoint's.

# %%
export_idefics2(vlm, workdir / "exported", Idefics2ProcessorSettings.from_pretrained(str(workdir / "idefics2")))
loaded, info = Idefics2ForConditionalGeneration.from_pretrained(workdir / "exported", output_loading_info=True)
original, exported = reference.state_dict(), loaded.state_dict()
equal = sum(torch.equal(exported[k], v) for k, v in original.items())
print(f"exported: {sorted(p.name for p in (workdir / 'exported').iterdir())}")
print(
    f"transformers loads it: missing/unexpected keys {sum(len(v) for v in info.values())}; "
    f"{equal} of {len(original)} tensors equal to the original checkpoint"
)

# %% [markdown]
# ## Figure: vlmkit's logits against transformers'

# %%
fig, ax = plt.subplots(figsize=(4.6, 4.2))
ax.scatter(expected[real].flatten()[::7], got[real].flatten()[::7], s=2, alpha=0.4)
ax.set_xlabel("transformers Idefics2 logits")
ax.set_ylabel("vlmkit (imported) logits")
ax.set_title(f"max |difference| {logits_diff:.1e} (lesson 10)")
figure = _lesson.save(fig, "10_logits.png")

# %% [markdown]
# **What to remember.** `import_idefics2(path)` gives vlmkit parts with the checkpoint's weights, tokenizer and
# template (YAML: `vlm: {class_path: vlmkit.interop.import_idefics2, init_args: {path_or_name: ...}}`);
# `vlmkit export-idefics2` writes a trained model back. Idefics3 and SmolVLM have the same pair
# (`import_idefics3`, `export_idefics3`). This ends the path: `recipes/` holds the full-size versions of each lesson.
