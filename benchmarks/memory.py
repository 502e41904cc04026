"""Peak memory of one training step: full fine-tuning vs LoRA vs QLoRA (4-bit NF4) on the same VLM.

    python benchmarks/memory.py [--modes full lora qlora] [--batch-size 4] [--dtype float32] [--out benchmarks/results]

The model is small but not tiny (SigLIP-style encoder 6 x 384, patch 16, 224 px; perceiver 64 latents; Mistral-style
LM 8 x 512 with a 32k vocabulary; about 60 M parameters), written once with ``save_pretrained`` (random weights, no
download) so that every mode loads the same checkpoint. Each mode runs in its own subprocess: build the model, then
one AdamW step (forward, backward, optimizer step, which allocates the optimizer state) on a synthetic batch.

- ``full``: every weight trains. ``lora``: LoRA (rank 16) on both backbones, connector and new token rows full.
  ``qlora``: the same LoRA on both backbones loaded in 4-bit NF4 (double quantization) through bitsandbytes.
- CUDA: ``torch.cuda.max_memory_allocated`` (model, then peak during the step). CPU: anonymous resident memory
  (``RssAnon``: tensors, not the page cache of the memory-mapped checkpoint), sampled every millisecond by a thread
  during the step, relative to the value after imports (Linux).

Prints a table and writes ``memory.json`` and ``memory.md``.
"""

import argparse
import contextlib
import ctypes
import functools
import gc
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

VISION = {"model_type": "siglip_vision_model", "hidden_size": 384, "intermediate_size": 1536,
          "num_hidden_layers": 6, "num_attention_heads": 6, "image_size": 224, "patch_size": 16}  # fmt: skip
LM = {"model_type": "mistral", "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
      "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 32000,
      "max_position_embeddings": 1024}  # fmt: skip
MODES = ("full", "lora", "qlora")
MB = 2**20


def write_checkpoints(root: Path) -> None:
    from transformers import AutoModel, AutoModelForCausalLM

    from vlmkit.llm.transformers_lm import build_transformers_config

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(build_transformers_config(LM)).save_pretrained(root / "lm")
    AutoModel.from_config(build_transformers_config(VISION)).save_pretrained(root / "vision")


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise, e.g. after quantizing on load)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_bytes() -> int:
    """Anonymous resident memory (``RssAnon``): tensors, not the page cache of memory-mapped checkpoint files."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only); run on CUDA or Linux")


class PeakRSS:
    """Highest RSS seen by a sampling thread while the block runs."""

    def __enter__(self):
        self.peak, self._stop = rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def build(mode: str, root: Path, dtype: str):
    from vlmkit.adapters import LoRA
    from vlmkit.connectors import PerceiverResampler
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.model import VisionLanguageModel
    from vlmkit.vision import TransformersVisionEncoder

    quantization = "nf4" if mode == "qlora" else None
    train = "full" if mode == "full" else LoRA(rank=16, alpha=32, dropout=0.0)
    connector = functools.partial(PerceiverResampler, num_latents=64, depth=2, num_heads=8, head_dim=64)
    return VisionLanguageModel(
        TransformersVisionEncoder(
            str(root / "vision"), position_embedding="bucket", quantization=quantization, compute_dtype=dtype
        ),
        connector,
        TransformersCausalLM(str(root / "lm"), tokenizer="synthetic", quantization=quantization, compute_dtype=dtype),
        train_vision_encoder=train,
        train_language_model=train,
    )


def worker(mode: str, root: Path, batch_size: int, dtype: str) -> dict:
    from vlmkit.data import SyntheticVQADataModule
    from vlmkit.training.module import answer_loss

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    start = torch.cuda.memory_allocated() if cuda else rss_bytes()
    vlm = build(mode, root, dtype)
    if mode != "qlora":  # bitsandbytes already placed the quantized parts
        vlm = vlm.to(device)
    else:
        vlm.connector.to(device)
    vlm.train()
    data = SyntheticVQADataModule(num_train=batch_size, batch_size=batch_size, min_size=160, max_size=224,
                                  max_image_size=224, min_image_size=160, max_shapes=3)  # fmt: skip
    data.connect(vlm)
    batch = next(iter(data.train_dataloader()))
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    with torch.no_grad():  # checkpoints load memory-mapped: copy float weights into memory, as training does
        for t in [*vlm.parameters(), *vlm.buffers()]:
            if t.is_floating_point() and not cuda:
                t.data = t.data.clone()
    trainable = [p for p in vlm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    release_freed_memory()
    if cuda:
        torch.cuda.synchronize()
        model_bytes = torch.cuda.memory_allocated() - start
        torch.cuda.reset_peak_memory_stats()
    else:
        model_bytes = rss_bytes() - start
    before = torch.cuda.memory_allocated() if cuda else rss_bytes()
    began = time.perf_counter()
    with PeakRSS() as rss:
        logits = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits
        loss = answer_loss(logits, batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    peak = torch.cuda.max_memory_allocated() if cuda else rss.peak
    stored = sum(t.numel() * t.element_size() for t in [*vlm.parameters(), *vlm.buffers()])
    return {
        "mode": mode,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "measure": "torch.cuda.max_memory_allocated" if cuda else "peak anonymous RSS",
        "parameters": sum(p.numel() for p in vlm.parameters()),
        "trainable": sum(p.numel() for p in trainable),
        "trainable_by_part": {
            part: sum(p.numel() for p in getattr(vlm, part).parameters() if p.requires_grad)
            for part in ("vision_encoder", "connector", "language_model")
        },
        "weights_mb": stored / MB,
        "model_mb": model_bytes / MB,
        "step_peak_mb": (peak - before) / MB,
        "total_peak_mb": (peak - start) / MB,
        "step_seconds": seconds,
        "loss": float(loss),
        "tokens": int(batch["attention_mask"].sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dtype", default="float32", help="compute dtype of the 4-bit layers (and nothing else)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.root), args.batch_size, args.dtype)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoints(Path(tmp))
        for mode in args.modes:
            command = [sys.executable, __file__, "--worker", mode, "--root", tmp]
            command += ["--batch-size", str(args.batch_size), "--dtype", args.dtype]
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
            if done.returncode:
                raise RuntimeError(f"mode {mode} failed:\n{done.stderr[-4000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    full = next((r for r in rows if r["mode"] == "full"), rows[0])
    header = (
        "| mode | parameters | trainable | weights MB | model MB | step peak MB | total peak MB | vs full | step s |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['parameters']:,} | {r['trainable']:,} | {r['weights_mb']:.0f} | {r['model_mb']:.0f} "
            f"| {r['step_peak_mb']:.0f} | {r['total_peak_mb']:.0f} | {r['total_peak_mb'] / full['total_peak_mb']:.2f}x "
            f"| {r['step_seconds']:.2f} |"
        )
    note = (
        f"\n{rows[0]['measure']} on {rows[0]['device']}, batch {args.batch_size}, "
        f"{rows[0]['tokens']} text+image tokens, fp32 weights (4-bit layers compute in {args.dtype}), "
        "torch " + torch.__version__ + "."
    )
    table = "\n".join(lines) + "\n" + note
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(rows, indent=2))
    (out / "memory.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
