"""Compose a tiny VLM in Python (no YAML), train it briefly on synthetic data, and answer questions.

    python examples/compose_in_python.py

Runs on CPU in about a minute. The same parts, injected by YAML, make `recipes/quickstart.yaml`.
"""

import functools

import lightning as L
import torch

from vlmkit.connectors import PerceiverResampler
from vlmkit.data import SyntheticVQADataModule
from vlmkit.llm import TransformersCausalLM
from vlmkit.model import VisionLanguageModel
from vlmkit.training import VLMModule, WarmupCosineSchedule
from vlmkit.vision import TransformersVisionEncoder


def main() -> None:
    L.seed_everything(0)
    vlm = VisionLanguageModel(
        vision_encoder=TransformersVisionEncoder(
            config={
                "model_type": "siglip_vision_model",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "image_size": 64,
                "patch_size": 8,
            },
            position_embedding="bucket",
        ),
        connector=functools.partial(PerceiverResampler, num_latents=16, depth=1, num_heads=4, head_dim=16),
        language_model=TransformersCausalLM(
            config={
                "model_type": "llama",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 512,
            },
            tokenizer="synthetic",
        ),
        train_vision_encoder="full",  # random init: everything trains
        train_language_model="full",
    )
    module = VLMModule(
        vlm,
        optimizer=functools.partial(torch.optim.AdamW, lr=2e-3),
        scheduler=functools.partial(WarmupCosineSchedule, warmup_steps=20, total_steps=300),
        max_new_tokens=4,
    )
    data = SyntheticVQADataModule(
        tasks=["color"], max_shapes=1, num_train=4800, num_val=64, num_predict=6, max_size=64, max_image_size=64
    )
    trainer = L.Trainer(
        max_steps=300,
        accelerator="cpu",
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        val_check_interval=100,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    print(
        f"validation accuracy {trainer.callback_metrics['val/accuracy']:.2f} "
        f"(majority baseline {data.majority_baseline('val'):.2f})"
    )
    for batch in trainer.predict(module, data):
        for record in batch:
            print(f"{record['question']!r:40} -> {record['prediction']!r:10} (answer {record['answer']!r})")


if __name__ == "__main__":
    main()
