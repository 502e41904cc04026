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


@pytest.mark.parametrize(("quantization", "mode"), [("nf4", "lora"), ("nf4", "dora"), ("int8", "lora")])
def test_adapters_wrap_quantized_layers_with_peft_bnb_layers_and_merge_into_dequantized_copies(
    tiny_lm_path, quantization, mode
):
    from peft.tuners.lora import bnb as peft_bnb

    from vlmkit.adapters import merge_adapters
    from vlmkit.quantization import dequantize, quantized_kind

    vlm = _qlora_vlm(tiny_lm_path, quantization, mode).eval()
    layer = vlm.language_model.model.model.layers[0].self_attn.q_proj
    expected = peft_bnb.Linear4bit if quantization == "nf4" else peft_bnb.Linear8bitLt
    assert type(layer) is expected  # peft's bitsandbytes LoRA layer, not its generic one
    assert not hasattr(vlm.language_model, "is_loaded_in_4bit")  # the flags only lived through the injection
    with torch.no_grad():
        for name, p in vlm.named_parameters():
            if p.requires_grad and ("lora_B" in name or "magnitude" in name or "trainable_rows" in name):
                p.add_(0.1 * torch.randn_like(p))  # a trained adapter (B = 0 at init would merge trivially)
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = vlm(ids).logits
        dequantize(merge_adapters(vlm))
        merged = vlm(ids).logits
    assert not any(quantized_kind(m) for m in vlm.modules())
    assert type(vlm.language_model.model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    # measured max |diff| (logits up to ~2): nf4 1.0e-6 (LoRA), 8.3e-7 (DoRA); int8 8.6e-3, as LLM.int8() also
    # quantizes the activations while the merged layer runs in float32
    tolerance = 1e-5 if quantization == "nf4" else 3e-2
    torch.testing.assert_close(merged, adapted, atol=tolerance, rtol=tolerance)


def test_4bit_layers_compute_in_their_compute_dtype_in_eval_on_cpu(tiny_lm_path):
    from vlmkit.quantization import dequantized_weight

    lm = TransformersCausalLM(tiny_lm_path, tokenizer="synthetic", quantization="nf4", compute_dtype="float32").eval()
    layer = lm.model.model.layers[0].mlp.down_proj
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))
    weight = dequantized_weight(layer)
    with torch.no_grad():  # bitsandbytes' bf16 CPU kernel (AVX512-BF16) would round to bf16 here
        torch.testing.assert_close(layer(x), x @ weight.T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dequantized_weight(layer), weight, atol=0, rtol=0)


def test_quantized_device_map_is_the_local_ranks_gpu_read_at_load_time(monkeypatch):
    from vlmkit.quantization import quantized_device_map

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert quantized_device_map() is None  # CPU: bitsandbytes' CPU path, no device map
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("SLURM_LOCALID", raising=False)
    assert quantized_device_map() == {"": torch.device("cuda", 0)}
    monkeypatch.setenv("SLURM_LOCALID", "2")
    assert quantized_device_map() == {"": torch.device("cuda", 2)}
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert quantized_device_map() == {"": torch.device("cuda", 3)}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one visible GPU per process
    assert quantized_device_map() == {"": torch.device("cuda", 0)}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="LOCAL_RANK=3 but this process sees 2 GPUs"):
        quantized_device_map()


class _Loaded(Exception):
    pass


def test_quantized_parts_load_on_the_local_ranks_gpu(monkeypatch, tiny_lm_path, tmp_path):
    from transformers import AutoModelForCausalLM, SiglipVisionConfig, SiglipVisionModel

    def capture(*args, **kwargs):
        raise _Loaded(kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", capture)
    with pytest.raises(_Loaded) as loaded:
        TransformersCausalLM(tiny_lm_path, tokenizer="synthetic", quantization="nf4")
    assert loaded.value.args[0]["device_map"] == {"": torch.device("cuda", 1)}

    config = SiglipVisionConfig(**{k: v for k, v in TINY_SIGLIP.items() if k != "model_type"})
    SiglipVisionModel(config).save_pretrained(tmp_path)
    monkeypatch.setattr(SiglipVisionModel, "from_pretrained", capture)
    with pytest.raises(_Loaded) as loaded:
        TransformersVisionEncoder(str(tmp_path), quantization="nf4")
    assert loaded.value.args[0]["device_map"] == {"": torch.device("cuda", 1)}
