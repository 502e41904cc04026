"""A tiny ablation spec and a fake ``vlmkit`` process for the runner's unit tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = """\
# A two-arm ablation for the tests.
#   vlmkit ablate --config tiny.yaml
title: Tiny ablation
paper: {reference: Table 0, metric: score, finding: B beats A.}
base: [--config=recipes/quickstart.yaml, "--model.vlm.init_args.language_model.init_args.tokenizer={pretrained}/lm"]
seed_args: ["--seed_everything={seed}"]
stages:
  - {name: fit, command: fit}
  - {name: eval, command: validate, args: ["--ckpt_path={ckpt:fit}"]}
arms:
  - {name: a, label: Arm A, args: [--trainer.max_steps=2], paper: 50.0}
  - {name: b, label: Arm B, args: [--trainer.max_steps=3], paper: 55.0}
metrics:
  - {key: "eval:val/accuracy", label: accuracy}
  - {key: "fit:divergence/events", label: divergences, higher_is_better: false}
baseline: {key: "eval:val/majority_baseline", label: majority answer}
comparisons:
  - {arm: b, reference: a, expect: better}
cost: ["fit:cost/forward_gflops"]
smoke: {args: [--trainer.max_steps=1], stage_args: {eval: [--data.init_args.num_val=4]}}
"""


def _arg(argv: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return values[-1] if values else None


class FakeVlmkit:
    """Stands in for ``python -m vlmkit <command> ...``: writes the recorder's JSON like a real run would.

    ``scores[(arm_steps, seed)]`` gives the accuracy; ``fail`` holds ``max_steps`` values whose fit fails;
    ``kill`` holds those killed after writing a ``last.ckpt`` (no record); ``diverge`` those the guard stops.
    """

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: set[str] = set()
        self.kill: set[str] = set()
        self.diverge: set[str] = set()

    def __call__(self, argv: list[str], log: Path, env: dict[str, str]) -> int:
        self.calls.append(argv)
        command = argv[3]
        root = Path(_arg(argv, "trainer.default_root_dir"))
        record_path = Path(_arg(argv, "trainer.callbacks.path"))
        steps, seed = _arg(argv, "trainer.max_steps"), int(_arg(argv, "seed_everything"))
        root.mkdir(parents=True, exist_ok=True)
        log.write_text(f"fake {command}\n")
        checkpoint = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
        if command == "fit" and steps in self.kill:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_text("partial")
            self.kill.discard(steps)  # the next attempt goes through
            return -9
        if command == "fit" and steps in self.fail:
            log.write_text("Traceback: boom\n")
            return 1
        status = "diverged" if command == "fit" and steps in self.diverge else "finished"
        if command == "fit":
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_text("weights")
        accuracy = 0.5 + 0.1 * (steps == "3") + 0.01 * seed
        metrics = {
            "val/accuracy": accuracy,
            "val/majority_baseline": 0.4,
            "divergence/events": float(status == "diverged"),
            "cost/forward_gflops": 0.1,
        }
        record = {
            "status": status,
            "metrics": metrics,
            "parameters": {"total": [100, 10]},
            "checkpoint": str(checkpoint) if command == "fit" else None,
            "train_loss": [[1, 2.0], [2, 1.5]],
            "history": [],
            "seconds": 0.1,
        }
        record_path.write_text(json.dumps(record))
        return 0 if status == "finished" else 1


@pytest.fixture
def tiny_spec(tmp_path, monkeypatch):
    """``tiny.yaml`` in a temporary working directory holding ``recipes/quickstart.yaml``."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "quickstart.yaml").write_text("seed_everything: 0\n")
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def fake_vlmkit():
    return FakeVlmkit()
