"""Worker for the 2-process CPU test of cross-attention fusion under DDP and FSDP2 (gloo); not collected by pytest.

    torchrun --standalone --nproc_per_node 2 tests/fusion/cross_attention_worker.py OUT

Trains the tiny VLM with gated cross-attention blocks (gates open, vision encoder frozen) for 3 steps with DDP and
with FSDP2 (``ModelParallelStrategy``: every decoder layer and every cross-attention block its own unit), then
greedily generates 4 tokens (no stop tokens: every rank decodes the same number of steps) for a rank-specific
batch of a text-only prompt and an image prompt. Every rank writes the full weights, its losses, its batch and
its generated ids to ``OUT``.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from PIL import Image
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_models
from tiny_models import build_tiny_vlm  # noqa: E402

from vlmkit.connectors import PerceiverResampler  # noqa: E402
from vlmkit.data import SyntheticVQADataModule, VLMCollator, VLMProcessor  # noqa: E402
from vlmkit.fusion import CrossAttentionFusion  # noqa: E402
from vlmkit.text import Turn  # noqa: E402
from vlmkit.training.module import VLMModule  # noqa: E402

STEPS = 3
CONNECTOR = functools.partial(
    PerceiverResampler, num_latents=3, depth=1, num_heads=2, head_dim=16, num_key_value_heads=1
)


def build_vlm():
    """The tiny VLM with a cross-attention block before every decoder layer, gates open."""
    fusion = CrossAttentionFusion(every_n_layers=1, num_heads=4, gate_init=0.5)
    return build_tiny_vlm(
        connector=CONNECTOR, fusion=fusion, train_vision_encoder="frozen", train_language_model="full"
    )


def prompts(vlm, rank: int) -> dict:
    """A left-padded batch: a text-only prompt and an image prompt, different on every rank."""
    processor = VLMProcessor.from_model(vlm, max_image_size=32, min_image_size=16)
    image = Image.new("RGB", (24, 16 + 8 * rank), (200, 20 * rank, 0))
    items = [
        processor([], [Turn("user", ["Say something" + "!" * rank])], add_generation_prompt=True),
        processor([image], [Turn("user", [{"type": "image"}, "What colour?"])], add_generation_prompt=True),
    ]
    return VLMCollator(vlm.tokenizer.pad_token_id, 8, padding_side="left")(items)


class Losses(Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def run(name: str, out: Path, strategy) -> None:
    L.seed_everything(0)
    losses = Losses()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_steps=STEPS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        default_root_dir=out,
        callbacks=[losses],
    )
    model = VLMModule(build_vlm(), optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    data = SyntheticVQADataModule(num_train=12, batch_size=2, min_size=16, max_size=32, max_image_size=32, num_val=2)
    trainer.fit(model, data)
    rank = dist.get_rank()
    vlm = model.vlm.eval()
    batch = prompts(vlm, rank)
    generated = vlm.generate(
        batch["input_ids"],
        batch["attention_mask"],
        batch["pixel_values"],
        batch["patch_mask"],
        max_new_tokens=4,
        stop_token_ids=[],
    )
    state = get_model_state_dict(vlm, options=StateDictOptions(full_state_dict=True))
    state = {k: v.detach().float().cpu().clone() for k, v in state.items()}
    torch.save(state, out / f"{name}_weights_rank{rank}.pt")
    torch.save({"batch": dict(batch), "generated": generated}, out / f"{name}_generation_rank{rank}.pt")
    (out / f"{name}_losses_rank{rank}.json").write_text(json.dumps(losses.losses))
    dist.barrier()


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run("ddp", out, DDPStrategy(process_group_backend="gloo"))
    run("fsdp", out, ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, process_group_backend="gloo"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
