"""GPU smoke run, part 2: quickstart throughput on the GPU, sync audit, and the summary of the gpu-marked tests.

    bash benchmarks/gpu_smoke.sh            # runs the tests, then this script
    python benchmarks/gpu_smoke.py [--junit benchmarks/results/gpu_smoke_junit.xml] [--steps 300] [--out ...]

Trains the quickstart model (``recipes/quickstart.yaml``: its model and data, a plain Trainer without validation,
checkpoints or logger) for ``--steps`` steps on one GPU in fp32 (``32-true``) and in ``bf16-mixed`` and reports
steps/s over the steps after a warm-up; counts the host-device synchronisations of one training step and of one
``generate`` call by call site (``torch.cuda.set_sync_debug_mode("warn")``); adds the outcome of every gpu test from
the JUnit file. Prints a table and writes ``gpu_smoke.json`` and ``gpu_smoke.md``.
"""

import argparse
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
from sync_debug import sync_sites  # noqa: E402

WARMUP = 20


class StepClock(L.Callback):
    """Wall time of the training steps after ``WARMUP`` (CUDA synchronised at both ends)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.steps = 0
        self.seconds = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == WARMUP:
            torch.cuda.synchronize()
            self.start = time.perf_counter()
        elif self.start is not None:
            self.steps = trainer.global_step - WARMUP

    def on_train_end(self, trainer, pl_module) -> None:
        torch.cuda.synchronize()
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def quickstart(precision: str, steps: int) -> dict:
    """Steps/s and samples/s of the quickstart recipe on one GPU."""
    from vlmkit.cli import build_cli

    cli = build_cli(["--config", str(ROOT / "recipes/quickstart.yaml"), "--trainer.logger=false"], run=False)
    clock = StepClock()
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision=precision,
        max_steps=WARMUP + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        callbacks=[clock],
    )
    trainer.fit(cli.model, cli.datamodule)
    batch_size = cli.datamodule.hparams.batch_size
    rate = clock.steps / clock.seconds if clock.seconds else float("nan")
    return {
        "precision": precision,
        "steps": clock.steps,
        "seconds": round(clock.seconds, 2),
        "steps_per_sec": round(rate, 2),
        "samples_per_sec": round(rate * batch_size, 1),
        "num_workers": cli.datamodule.train_dataloader().num_workers,
    }


def sync_audit() -> dict:
    """Synchronisations by call site: one training step (after a warm-up step) and one ``generate``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tiny_vlm

    from vlmkit.data import SyntheticVQADataModule
    from vlmkit.eval.generation import PAPER_STOP_STRINGS
    from vlmkit.training.module import answer_loss

    vlm = build_tiny_vlm(train_language_model="lora").cuda()
    dm = SyntheticVQADataModule(num_train=4, num_predict=4, batch_size=4, min_size=16, max_size=40, max_image_size=40)
    dm.connect(vlm)

    def on_gpu(batch):
        return {k: v.cuda(non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    train, prompts = on_gpu(next(iter(dm.train_dataloader()))), on_gpu(next(iter(dm.predict_dataloader())))
    optimizer = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-3)

    def step():
        logits = vlm(train["input_ids"], train["attention_mask"], train["pixel_values"], train["patch_mask"]).logits
        answer_loss(logits, train["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()

    def generate():
        with torch.no_grad():
            vlm.eval().generate(
                prompts["input_ids"], prompts["attention_mask"], prompts["pixel_values"], prompts["patch_mask"],
                max_new_tokens=8, stop_strings=PAPER_STOP_STRINGS,
            )  # fmt: skip
        vlm.train()

    step()
    generate()
    return {"training step": dict(sync_sites(step)), "generate (8 tokens)": dict(sync_sites(generate))}


def test_outcomes(junit: Path) -> list[dict]:
    """Outcome and time of every test case in a pytest JUnit XML file."""
    if not junit.is_file():
        return []
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "FAILED", "error": "ERROR"}.get(tag, "skipped")
                if tag == "skipped" and "xfail" in (node.get("type") or "") + (node.get("message") or ""):
                    outcome = "xfail"
        rows.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                     "seconds": float(case.get("time", 0))})  # fmt: skip
    return rows


def markdown(result: dict) -> str:
    lines = [f"GPU smoke run on {result['device']} (torch {result['torch']}, {result['gpus']} GPU(s))", ""]
    lines += ["| gpu test | outcome | s |", "|---|---|---:|"]
    lines += [f"| `{r['test']}` | {r['outcome']} | {r['seconds']:.1f} |" for r in result["tests"]]
    lines += ["", "| quickstart on 1 GPU | steps/s | samples/s | steps timed | workers |", "|---|---:|---:|---:|---:|"]
    for r in result["quickstart"]:
        lines.append(
            f"| {r['precision']} | {r['steps_per_sec']} | {r['samples_per_sec']} | {r['steps']} | {r['num_workers']} |"
        )
    lines += ["", "| synchronisations | call site | count |", "|---|---|---:|"]
    for phase, sites in result["syncs"].items():
        lines += [f"| {phase} | `{site}` | {n} |" for site, n in sorted(sites.items())] or [f"| {phase} | none | 0 |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junit", default="benchmarks/results/gpu_smoke_junit.xml", help="pytest -m gpu JUnit XML")
    parser.add_argument("--steps", type=int, default=300, help="timed quickstart steps per precision")
    parser.add_argument("--out", default="benchmarks/results", help="folder for gpu_smoke.json/.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_smoke.py needs a CUDA GPU")
    result = {
        "device": torch.cuda.get_device_name(0),
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "tests": test_outcomes(Path(args.junit)),
        "quickstart": [quickstart(precision, args.steps) for precision in ("32-true", "bf16-mixed")],
        "syncs": sync_audit(),
    }
    table = markdown(result)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_smoke.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gpu_smoke.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
