"""Every stage of every arm of every shipped ablation instantiates from its exact command line, and a batch of its
data runs through its model (on tiny stand-in backbones: the arms take their architecture from the checkpoints)."""

import json
from pathlib import Path

import pytest
import torch
from tiny_models import TINY_LM, TINY_SIGLIP

from vlmkit.ablate.pretrain import PretrainSettings, prepare_backbones
from vlmkit.ablate.runner import RECORD, plan, stage_args
from vlmkit.ablate.spec import load_ablation

ROOT = Path(__file__).resolve().parents[2]
CASES = [
    (path, arm.name, stage.name)
    for path in sorted((ROOT / "recipes" / "ablations").glob("*.yaml"))
    for arm in load_ablation(path).arms
    for stage in load_ablation(path).stages
]


@pytest.fixture(scope="module")
def tiny_backbones(tmp_path_factory):
    settings = PretrainSettings(
        lm_steps=2, vision_steps=2, batch_size=2, eval_samples=4, lm_config=dict(TINY_LM),
        vision_config=dict(TINY_SIGLIP, vision_use_head=False),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("pretrained")
    prepare_backbones(path, settings)
    return path


@pytest.mark.integration
@pytest.mark.parametrize(("path", "arm", "stage"), CASES, ids=lambda v: v.stem if isinstance(v, Path) else v)
def test_every_arm_and_stage_instantiates_and_runs_a_batch(path, arm, stage, tiny_backbones, tmp_path, monkeypatch):
    from vlmkit.cli import build_cli

    monkeypatch.chdir(ROOT)
    ablation = load_ablation(path)
    task = next(t for t in plan(ablation, tmp_path, [0]) if t.arm.name == arm)
    for earlier in ablation.stages:  # what an earlier stage would have recorded
        (task.run_dir / earlier.name).mkdir(parents=True, exist_ok=True)
        (task.run_dir / earlier.name / RECORD).write_text(json.dumps({"checkpoint": "/not/run/last.ckpt"}))
    args = stage_args(task, next(s for s in ablation.stages if s.name == stage), tiny_backbones)
    args = [a for a in args if not a.startswith("--ckpt_path=")]  # a run option of fit/validate, not a config key
    cli = build_cli(args, run=False)
    vlm = cli.model.vlm
    assert cli.trainer.default_root_dir == str(task.run_dir / stage)
    assert any(type(c).__name__ == "RunRecorder" for c in cli.trainer.callbacks)
    cli.datamodule.connect(vlm)
    loaders = cli.datamodule.val_dataloader()
    batch = next(iter(loaders[0] if isinstance(loaders, list) else loaders))
    vlm.eval()
    with torch.no_grad():
        logits = cli.model(batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and bool(torch.isfinite(logits).all())
