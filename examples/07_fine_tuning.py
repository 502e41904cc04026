# %% [markdown]
# # Lesson 7: fine-tuning, what trains and what it costs
#
# Trainability is declared when the model is composed, per part: `train_vision_encoder`, `train_language_model`
# and `train_fusion` take `"frozen"`, `"full"`, `"lora"`, `"dora"` or a `LoRA(...)`; the connector is new and always
# trains. The paper's choices (section 3.2, Finding 3; section 4.2):
#
# - **frozen** backbones: only the connector (and the new special tokens' embedding rows) train; stable, limited
#   (Table 3: 60.3).
# - **full** backbones: every weight trains; the fully autoregressive model *diverged* in the paper.
# - **LoRA** (Hu et al. 2022) on the backbones: `W + (alpha/r) B A` with small `A`, `B`; stable and better
#   (Table 3: 69.5). Idefics2's pretraining.
# - **DoRA** (Liu et al. 2024): LoRA with a learned magnitude per output; Idefics2's instruction tuning.
# - **QLoRA**: LoRA over a backbone whose frozen weights are stored in 4 bits (NF4, bitsandbytes): the same
#   trainable parameters, a quarter of the frozen weights' memory (not used in the paper; `quantization: nf4`).
#
# Run: `python examples/07_fine_tuning.py`. Figure: `examples/out/07_memory.png`.

# %%
import _lesson  # noqa: I001  (first: selects matplotlib's file backend)
import functools
import tempfile

import matplotlib.pyplot as plt
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from vlmkit.adapters import LoRA
from vlmkit.connectors import PerceiverResampler
from vlmkit.data import SyntheticVQADataModule
from vlmkit.llm import TransformersCausalLM
from vlmkit.model import VisionLanguageModel
from vlmkit.trainability import apply_trainability, count_parameters, parameter_table
from vlmkit.training.module import answer_loss
from vlmkit.vision import TransformersVisionEncoder

torch.manual_seed(0)
PARTS = ("vision_encoder", "connector", "fusion", "language_model")

# %% [markdown]
# ## A "pretrained" language model on disk
#
# Fine-tuning starts from a checkpoint. We save a tiny random Llama (2 x 128) with `save_pretrained` and load it by
# path, as one would load `mistralai/Mistral-7B-v0.1`: quantized loading (QLoRA) needs a checkpoint to quantize.

# %%
checkpoint = tempfile.mkdtemp(prefix="vlmkit_lesson7_")
lm_config = _lesson.llama_config(hidden_size=128, layers=2)
AutoModelForCausalLM.from_config(AutoConfig.for_model(**lm_config)).save_pretrained(checkpoint)


def compose(mode: str) -> VisionLanguageModel:
    """The same VLM with both backbones trained as ``mode`` (``"qlora"``: 4-bit LM + LoRA)."""
    torch.manual_seed(0)
    quantized = mode == "qlora"
    lm = TransformersCausalLM(
        checkpoint, tokenizer="synthetic", quantization="nf4" if quantized else None, compute_dtype="float32"
    )
    trainability = {
        "qlora": LoRA(rank=8, alpha=16),
        "lora": LoRA(rank=8, alpha=16),
        "dora": LoRA(rank=8, alpha=16, use_dora=True),
    }.get(mode, mode)
    return VisionLanguageModel(
        vision_encoder=TransformersVisionEncoder(config=_lesson.siglip_config(hidden_size=64)),
        connector=functools.partial(
            PerceiverResampler, num_latents=8, depth=1, num_heads=4, head_dim=16, num_key_value_heads=2
        ),
        language_model=lm,
        train_vision_encoder="full" if mode == "full" else trainability if mode != "qlora" else "lora",
        train_language_model=trainability,
    )


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as stored (4-bit weights pack two values per byte)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


# %% [markdown]
# ## What trains, and what one optimizer step changes
#
# For each setting: parameters per part (total and trainable) and the weights one AdamW step on a synthetic batch
# actually changed. Frozen weights must stay bit-identical; with LoRA/DoRA only adapters, the connector and the new
# token rows move.

# %%
modes = ["frozen", "full", "lora", "dora", "qlora"]
results = {}
batch = None
for mode in modes:
    try:
        vlm = compose(mode)
    except Exception as error:  # bitsandbytes missing or without a backend for this machine
        print(f"\n{mode}: cannot run here ({type(error).__name__}: {error}); see the memory arithmetic below")
        continue
    if batch is None:
        data = SyntheticVQADataModule(num_train=4, batch_size=4, max_size=48, max_image_size=48)
        data.connect(vlm)
        batch = next(iter(data.train_dataloader()))
    trainable = {name for name, p in vlm.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in vlm.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    logits = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits
    answer_loss(logits, batch["labels"]).backward()
    optimizer.step()
    changed = {name for name, p in vlm.named_parameters() if not torch.equal(before[name], p.detach())}
    results[mode] = {
        "total": count_parameters(vlm),
        "trainable": count_parameters(vlm, trainable_only=True),
        "changed_outside_trainable": len(changed - trainable),
        "changed": len(changed),
        "adapters_changed": any("lora_" in name for name in changed),
        "weight_bytes": weight_bytes(vlm),
    }
    print(
        f"\n== {mode}: {results[mode]['trainable']:,} of {results[mode]['total']:,} parameters train "
        f"({results[mode]['trainable'] / results[mode]['total']:.0%}); one step changed {len(changed)} tensors, "
        f"{len(changed - trainable)} of them frozen; weights take {results[mode]['weight_bytes'] / 1e6:.2f} MB"
    )
    print(parameter_table(vlm, PARTS))
if "qlora" in results:
    print(
        f"\nQLoRA ran here: the LM's linear weights are stored in 4 bits "
        f"({results['lora']['weight_bytes'] / results['qlora']['weight_bytes']:.1f}x smaller model than LoRA in "
        f"fp32 at this toy size, where embeddings and norms, which stay unquantized, are a large share; its "
        f"parameter count is lower because PyTorch counts the packed 4-bit storage, two weights per element)."
    )
else:
    print(
        "\nQLoRA did not run on this machine (bitsandbytes needs a supported backend, usually a CUDA GPU): only "
        "the memory arithmetic below applies."
    )

# %% [markdown]
# ## The memory arithmetic at Idefics2's size
#
# Training memory for the weights and optimizer (activations excluded; they depend on batch and sequence length):
# a trained parameter in mixed precision with AdamW costs 16 bytes (bf16 weight and gradient, fp32 master copy and
# two Adam moments); a frozen bf16 weight 2 bytes; a frozen NF4 weight about 0.52 bytes (4 bits plus the double-
# quantized scales: 0.127 bits per weight). The parameter counts are vlmkit's own: Mistral-7B and its LoRA adapters
# are built on PyTorch's `meta` device (shapes only, no memory) and counted.

# %%
mistral = {
    "model_type": "mistral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
}
siglip_so400m = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
}
with torch.device("meta"):
    big_lm = TransformersCausalLM(config=mistral, tokenizer="synthetic")
    big_vision = TransformersVisionEncoder(config=siglip_so400m)
    big_connector = PerceiverResampler(1152, 4096, projection_hidden_dim=14336)  # Idefics2's, as in lesson 3
    lm_params, vision_params = count_parameters(big_lm), count_parameters(big_vision)
    connector_params = count_parameters(big_connector)
    apply_trainability(big_lm, LoRA(rank=8, alpha=16), "train_language_model")
    apply_trainability(big_vision, LoRA(rank=8, alpha=16), "train_vision_encoder")
    lora_params = count_parameters(big_lm, trainable_only=True) + count_parameters(big_vision, trainable_only=True)
GB = 1e9
backbones = lm_params + vision_params
memory = {
    "full": (backbones + connector_params) * 16 / GB,
    "frozen": (backbones * 2 + connector_params * 16) / GB,
    "LoRA": (backbones * 2 + (connector_params + lora_params) * 16) / GB,
    "QLoRA": (backbones * 0.516 + (connector_params + lora_params) * 16) / GB,
}
print(
    f"Mistral-7B {lm_params / 1e9:.2f}B + SigLIP-SO400M {vision_params / 1e9:.2f}B + perceiver connector "
    f"{connector_params / 1e9:.2f}B parameters; LoRA rank 8 on every linear of the backbones' blocks adds "
    f"{lora_params / 1e6:.1f}M ({lora_params / backbones:.2%} of the backbones)"
)
for name, gb in memory.items():
    print(f"  {name:>6}: about {gb:5.0f} GB for weights, gradients and optimizer state")
print(
    f"of the LoRA and QLoRA totals, {connector_params * 16 / GB:.0f} GB is the new perceiver connector, which trains "
    "in full: past the backbones, the connector is what fine-tuning memory pays for"
)

fig, ax = plt.subplots(figsize=(7, 3.4))
ax.barh(list(memory), list(memory.values()), color=["tab:red", "tab:gray", "tab:blue", "tab:green"])
for i, gb in enumerate(memory.values()):
    ax.text(gb, i, f" {gb:.0f} GB", va="center")
ax.axvline(80, color="k", ls=":", label="one 80 GB GPU")
ax.set_xlabel("GB (weights + gradients + AdamW state, no activations)")
ax.set_title("Fine-tuning Idefics2-8B: memory by trainability (lesson 7)")
ax.legend()
figure = _lesson.save(fig, "07_memory.png")

# %% [markdown]
# **What to remember.** Trainability is one argument per part; LoRA/DoRA train well under 1% of a 7B LM, and
# QLoRA stores the frozen rest in 4 bits, so an 8B VLM fine-tunes on one GPU. LoRA layers merge back into the
# weights for inference (`vlmkit export`). Next: lesson 8, how a model is evaluated.
