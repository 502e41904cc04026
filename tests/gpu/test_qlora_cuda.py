"""QLoRA on a GPU: NF4 base on this process's GPU, bitsandbytes LoRA layers, a training step, merge and export."""

import bitsandbytes as bnb
import pytest
import torch
from tiny_models import TINY_SIGLIP

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _qlora(path, mode="lora"):
    from vlmkit.connectors import MLPProjection
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.model import VisionLanguageModel
    from vlmkit.vision import TransformersVisionEncoder

    torch.manual_seed(0)
    lm = TransformersCausalLM(path, tokenizer="synthetic", quantization="nf4", compute_dtype="bfloat16")
    return VisionLanguageModel(
        TransformersVisionEncoder(config=TINY_SIGLIP),  # fp32 like the connector; the LM computes in bf16
        MLPProjection,
        lm,
        train_language_model=mode,
    )


def test_4bit_weights_load_on_the_local_ranks_gpu(tiny_lm_path, monkeypatch):
    last = torch.cuda.device_count() - 1  # what rank LOCAL_RANK = last gets; GPU 0 before the fix
    monkeypatch.setenv("LOCAL_RANK", str(last))
    vlm = _qlora(tiny_lm_path)
    base = vlm.language_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(base, bnb.nn.Linear4bit) and base.weight.device == torch.device("cuda", last)


@pytest.mark.parametrize("mode", ["lora", "dora"])
def test_qlora_step_then_merge_reproduces_the_logits(tiny_lm_path, mode):
    from peft.tuners.lora.bnb import Linear4bit as LoRALinear4bit

    from vlmkit.adapters import merge_adapters
    from vlmkit.data import SyntheticVQADataModule
    from vlmkit.quantization import dequantize
    from vlmkit.training.module import answer_loss

    vlm = _qlora(tiny_lm_path, mode).cuda()
    assert isinstance(vlm.language_model.model.model.layers[0].mlp.down_proj, LoRALinear4bit)
    dm = SyntheticVQADataModule(num_train=4, batch_size=4, min_size=16, max_size=32, max_image_size=32)
    dm.connect(vlm)
    batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in next(iter(dm.train_dataloader())).items()}
    packed = {k: v.clone() for k, v in vlm.state_dict().items() if v.dtype == torch.uint8}
    optimizer = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        logits = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits
        loss = answer_loss(logits, batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.isfinite(loss)
    after = vlm.state_dict()
    assert packed and all(torch.equal(after[k], v) for k, v in packed.items())  # 4-bit weights untouched
    vlm.eval()
    with torch.no_grad():
        adapted = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits
        dequantize(merge_adapters(vlm))
        merged = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits
    assert not any(isinstance(m, (bnb.nn.Linear4bit, LoRALinear4bit)) for m in vlm.modules())
    # bf16 compute: the merged weights are rounded to bf16 once, the adapted layer rounds W x and B A x apart
    # (the same check on CPU in bf16: relative error 4.0e-3 LoRA, 4.5e-3 DoRA)
    error = (merged.float() - adapted.float()).norm() / adapted.float().norm()
    assert error < 2e-2
