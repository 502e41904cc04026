"""The dtype policy: trainable weights and optimizer state in fp32, frozen weights as loaded, bf16 compute."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tiny_models import TINY_LM, TINY_SIGLIP

from vlmkit.connectors import MLPProjection
from vlmkit.data import SyntheticVQADataModule
from vlmkit.llm import TransformersCausalLM
from vlmkit.model import VisionLanguageModel
from vlmkit.training.module import VLMModule
from vlmkit.training.precision import half_precision_note, keep_trainable_in_fp32
from vlmkit.vision import TransformersVisionEncoder


def _bf16_composition() -> VisionLanguageModel:
    """bf16 backbones (frozen encoder, LoRA on the LM): trainable adapters and token rows start in bf16."""
    torch.manual_seed(0)
    encoder = TransformersVisionEncoder(config=TINY_SIGLIP, torch_dtype="bfloat16")
    lm = TransformersCausalLM(config=TINY_LM, tokenizer="synthetic", torch_dtype="bfloat16")
    return VisionLanguageModel(encoder, MLPProjection, lm, train_language_model="lora")


def test_keep_trainable_in_fp32_casts_only_trainable_weights_in_place():
    vlm = _bf16_composition()
    trainable = {n: p for n, p in vlm.named_parameters() if p.requires_grad}
    assert {p.dtype for p in trainable.values()} == {torch.bfloat16, torch.float32}  # LoRA/rows bf16, connector fp32
    was_bf16 = {n for n, p in trainable.items() if p.dtype == torch.bfloat16}
    assert set(keep_trainable_in_fp32(vlm)) == was_bf16
    params = dict(vlm.named_parameters())
    assert all(params[n] is p and p.dtype == torch.float32 for n, p in trainable.items())  # same Parameter objects
    assert {p.dtype for p in vlm.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert keep_trainable_in_fp32(vlm) == []
    assert "fp32" in half_precision_note("bf16-true") and half_precision_note("bf16-mixed") is None


class _Record(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            hook = pl_module.vlm.connector.register_forward_hook(lambda m, a, o: setattr(self, "connector", o.dtype))
            self.hook = hook

    def on_train_end(self, trainer, pl_module):
        self.hook.remove()
        vlm = pl_module.vlm
        self.trainable = {p.dtype for p in vlm.parameters() if p.requires_grad}
        self.frozen = {p.dtype for p in vlm.parameters() if not p.requires_grad}
        state = trainer.optimizers[0].state.values()
        self.optimizer = {v.dtype for s in state for v in s.values() if v.dim() > 0}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("precision", "connector_compute"),
    [("bf16-mixed", torch.bfloat16), ("bf16-true", torch.float32), ("32-true", torch.float32)],
)
def test_bf16_compositions_train_with_fp32_master_weights(tmp_path, precision, connector_compute):
    record = _Record()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=[record],
    )
    data = SyntheticVQADataModule(num_train=4, batch_size=2, min_size=16, max_size=32, max_image_size=32, num_val=2)
    module = VLMModule(_bf16_composition())
    trainer.fit(module, data)
    assert record.trainable == {torch.float32} and record.optimizer == {torch.float32}  # master weights, AdamW state
    assert record.frozen == {torch.bfloat16}  # frozen weights keep their memory-saving dtype
    assert record.connector == connector_compute  # bf16-mixed: autocast; bf16-true: trainable layers compute in fp32
    lora_b = [p for n, p in module.vlm.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # it trained (B starts at zero)
