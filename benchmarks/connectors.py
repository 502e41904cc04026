"""Connector cost on the quickstart model: parameters, visual tokens per image, and train-step time.

    python benchmarks/connectors.py [--steps 10] [--out benchmarks/results]

Prints a table and writes ``connectors.json`` and ``connectors.md``. Times are compared as ratios to the
perceiver measured in the same run (absolute times depend on the machine).
"""

import argparse
import functools
import json
import time
from pathlib import Path

import torch

from vlmkit.connectors import LinearProjection, MappingNetwork, MLPProjection, PerceiverResampler, PixelShuffleConnector
from vlmkit.data import SyntheticVQADataModule
from vlmkit.llm import TransformersCausalLM
from vlmkit.model import VisionLanguageModel
from vlmkit.training.module import answer_loss
from vlmkit.vision import TransformersVisionEncoder

VISION = {"model_type": "siglip_vision_model", "hidden_size": 128, "intermediate_size": 256,
          "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 64, "patch_size": 8}  # fmt: skip
LM = {"model_type": "mistral", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512}  # fmt: skip
CONNECTORS = {
    "perceiver (32 latents)": functools.partial(
        PerceiverResampler, num_latents=32, depth=2, num_heads=4, head_dim=32, num_key_value_heads=2
    ),
    "mlp (1 token/patch)": MLPProjection,
    "linear (32 tokens)": functools.partial(LinearProjection, num_patches=64, num_tokens=32),
    "mapping network (32)": functools.partial(MappingNetwork, num_tokens=32, hidden_dim=128, depth=2, num_heads=4),
    "pixel shuffle (r=2)": functools.partial(PixelShuffleConnector, scale_factor=2),
}


def measure(name, connector, steps: int) -> dict:
    torch.manual_seed(0)
    vlm = VisionLanguageModel(
        TransformersVisionEncoder(config=VISION, position_embedding="bucket"),
        connector,
        TransformersCausalLM(config=LM, tokenizer="synthetic"),
        train_vision_encoder="full",
        train_language_model="full",
    )
    data = SyntheticVQADataModule(num_train=16 * (steps + 2), batch_size=16, max_size=64, max_image_size=64)
    data.connect(vlm)
    batches = list(data.train_dataloader())
    optimizer = torch.optim.AdamW(vlm.parameters(), lr=1e-4)

    def step(batch):
        out = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"])
        answer_loss(out.logits, batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()

    for batch in batches[:2]:  # warm-up
        step(batch)
    start = time.perf_counter()
    for batch in batches[2:]:
        step(batch)
    seconds = (time.perf_counter() - start) / steps
    return {
        "connector": name,
        "connector_params": sum(p.numel() for p in vlm.connector.parameters()),
        "tokens_32x32": vlm.num_image_tokens(32, 32),
        "tokens_64x64": vlm.num_image_tokens(64, 64),
        "tokens_per_batch": sum(int(b["attention_mask"].sum()) for b in batches[2:]) / steps,
        "step_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per connector")
    parser.add_argument("--out", default="benchmarks/results", help="folder for connectors.json/.md")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = [measure(name, factory, args.steps) for name, factory in CONNECTORS.items()]
    base = rows[0]["step_seconds"]
    for row in rows:
        row["step_time_vs_perceiver"] = row["step_seconds"] / base
    header = "| connector | params | tokens 32x32 | tokens 64x64 | LM tokens/batch | step time vs perceiver |"
    lines = [header, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['connector']} | {r['connector_params']:,} | {r['tokens_32x32']} | {r['tokens_64x64']} | "
            f"{r['tokens_per_batch']:.0f} | {r['step_time_vs_perceiver']:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "connectors.json").write_text(
        json.dumps({"device": "cpu", "threads": torch.get_num_threads(), "rows": rows}, indent=2)
    )
    (out / "connectors.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
