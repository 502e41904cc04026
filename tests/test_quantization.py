import functools

import bitsandbytes as bnb
import pytest
import torch
from tiny_models import TINY_LM, TINY_SIGLIP

from vlmkit.adapters import trainable_state_dict
from vlmkit.connectors import MLPProjection
from vlmkit.llm import TransformersCausalLM
from vlmkit.model import VisionLanguageModel
from vlmkit.quantization import bitsandbytes_config
from vlmkit.training.module import answer_loss
from vlmkit.vision import TransformersVisionEncoder


def _qlora_vlm(tiny_lm_path, quantization="nf4", mode="lora"):
    torch.manual_seed(0)
    lm = TransformersCausalLM(tiny_lm_path, tokenizer="synthetic", quantization=quantization, compute_dtype="float32")
    return VisionLanguageModel(
        TransformersVisionEncoder(config=TINY_SIGLIP),
        functools.partial(MLPProjection),
        lm,
        train_language_model=mode,
    )


def _batch(vlm):
    from vlmkit.data import SyntheticVQADataModule

    dm = SyntheticVQADataModule(num_train=2, batch_size=2, min_size=16, max_size=32, max_image_size=32)
    dm.connect(vlm)
    return next(iter(dm.train_dataloader()))


def test_qlora_step_changes_only_trainable_weights(tiny_lm_path):
    vlm = _qlora_vlm(tiny_lm_path)
    layer = vlm.language_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer.base_layer, bnb.nn.Linear4bit)
    batch = _batch(vlm)
    before = {k: v.clone() for k, v in vlm.state_dict().items() if isinstance(v, torch.Tensor)}
    optimizer = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        logits = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits
        answer_loss(logits, batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = vlm.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed and changed <= set(trainable_state_dict(vlm))
    assert any("lora_B" in k for k in changed)
    assert not any(k.endswith("base_layer.weight") and "language_model" in k for k in changed)


def test_4bit_linear_weights_take_an_eighth_of_fp32(tiny_lm_path):
    full = TransformersCausalLM(tiny_lm_path, tokenizer="synthetic")
    quantized = TransformersCausalLM(tiny_lm_path, tokenizer="synthetic", quantization="nf4", compute_dtype="float32")

    def linear_bytes(model, cls):
        layers = [m for m in model.modules() if isinstance(m, cls)]
        return sum(p.numel() * p.element_size() for m in layers for p in m.parameters()), len(layers)

    fp32_bytes, n_fp32 = linear_bytes(full.model.model.layers, torch.nn.Linear)
    nf4_bytes, n_nf4 = linear_bytes(quantized.model.model.layers, bnb.nn.Linear4bit)
    assert n_fp32 == n_nf4 == 14  # 7 projections per decoder layer, all quantized
    assert nf4_bytes * 8 == fp32_bytes  # 4 bits instead of 32 (absmax statistics live outside the weights)
    saving = full.model.get_memory_footprint() - quantized.model.get_memory_footprint()
    assert saving >= 0.8 * (fp32_bytes - nf4_bytes)


def test_quantized_parts_cannot_train_fully_and_need_a_checkpoint(tiny_lm_path):
    with pytest.raises(ValueError, match="train_language_model='full' on a nf4-quantized part"):
        _qlora_vlm(tiny_lm_path, mode="full")
    with pytest.raises(ValueError, match="quantization needs a checkpoint"):
        TransformersCausalLM(config=TINY_LM, tokenizer="synthetic", quantization="nf4")
    with pytest.raises(ValueError, match="quantization='nf3'"):
        bitsandbytes_config("nf3", torch.float32, "quantization")


def test_int8_base_weights_load_for_lora(tiny_lm_path):
    vlm = _qlora_vlm(tiny_lm_path, quantization="int8")
    layer = vlm.language_model.model.model.layers[0].mlp.down_proj
    assert isinstance(layer.base_layer, bnb.nn.Linear8bitLt)
    assert layer.base_layer.weight.dtype == torch.int8


def test_vision_encoder_loads_in_4bit_close_to_fp32_and_takes_lora(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    # bitsandbytes' CPU 4-bit kernel needs output widths that are multiples of its block (64 here)
    config = {k: v for k, v in TINY_SIGLIP.items() if k != "model_type"} | {"hidden_size": 64, "intermediate_size": 128}
    SiglipVisionModel(SiglipVisionConfig(**config)).save_pretrained(tmp_path)
    full = TransformersVisionEncoder(str(tmp_path))
    quantized = TransformersVisionEncoder(str(tmp_path), quantization="nf4", compute_dtype="float32")
    assert isinstance(quantized.backbone.encoder.layers[0].mlp.fc1, bnb.nn.Linear4bit)
    images = torch.randn(2, 3, 32, 32)  # 4 x 4 patches
    with torch.no_grad():
        reference, approx = full(images), quantized(images)
    error = (approx - reference).norm() / reference.norm()
    assert 0 < error < 0.2  # 4-bit weights: close, not equal
    from vlmkit.trainability import apply_trainability

    apply_trainability(quantized, "lora", "train_vision_encoder")
    trainable = [n for n, p in quantized.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
