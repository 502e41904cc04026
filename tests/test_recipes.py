"""Every recipe opens with a comment holding its launch command, and that command instantiates."""

import re
import shlex
from pathlib import Path

import pytest

from vlmkit.cli import build_cli

ROOT = Path(__file__).resolve().parents[1]
# Real-scale recipes name hub checkpoints (SigLIP-SO400M, Mistral-7B, Idefics2-8B, SmolVLM):
# tests/test_recipes_idefics2.py and tests/test_recipes_smolvlm.py instantiate them at full size on `meta` instead.
REAL_SCALE = sorted(
    [
        *(ROOT / "recipes/idefics2").glob("*.yaml"),
        *(ROOT / "recipes/smolvlm").glob("*.yaml"),
        ROOT / "recipes/finetune/qlora_1gpu.yaml",
    ]
)
# recipes/ablations/ holds ablation specs (`vlmkit ablate`) and their fragments, which load the toy pretrained
# backbones: tests/ablate/test_recipes_ablations.py instantiates every arm of every ablation instead.
ABLATIONS = ROOT / "recipes" / "ablations"
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if p not in REAL_SCALE and ABLATIONS not in p.parents)


def launch_command(recipe: Path) -> list[str]:
    header = []
    for line in recipe.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# "))
    commands = [line for line in header if line.startswith("vlmkit ")]
    assert header and commands, f"{recipe.name} must open with a comment holding its `vlmkit ...` launch command"
    return shlex.split(commands[0])


def test_recipes_exist():
    names = {p.relative_to(ROOT / "recipes").as_posix() for p in RECIPES}
    assert {"quickstart.yaml", "connectors/linear.yaml", "connectors/mlp.yaml"} <= names
    assert {"connectors/mapping_network.yaml", "connectors/perceiver.yaml"} <= names
    assert {"scale/ddp.yaml", "scale/fsdp.yaml", "scale/multinode_slurm.yaml"} <= names


def test_no_recipe_trains_on_the_cpu_when_a_gpu_is_there():
    """``accelerator: cpu`` would train on the CPU of a GPU machine; recipes say ``auto`` (or ``gpu``)."""
    import yaml

    pinned = []
    for recipe in sorted((ROOT / "recipes").rglob("*.yaml")):
        accelerator = (yaml.safe_load(recipe.read_text()).get("trainer") or {}).get("accelerator")
        if accelerator not in (None, "auto", "gpu", "cuda"):
            pinned.append(f"{recipe.relative_to(ROOT)}: {accelerator}")
    assert not pinned


def test_fsdp_recipe_names_no_gpu_count():
    import yaml

    strategy = yaml.safe_load((ROOT / "recipes/scale/fsdp.yaml").read_text())["trainer"]["strategy"]
    assert strategy["class_path"] == "vlmkit.training.FSDP2Strategy"
    assert "data_parallel_size" not in strategy.get("init_args", {})  # the world size, whatever it is


@pytest.mark.integration
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_recipe_launch_command_instantiates(recipe, monkeypatch):
    command = launch_command(recipe)
    assert command[0] == "vlmkit" and command[1] in ("fit", "validate", "test", "predict")
    assert str(recipe.relative_to(ROOT)) in command, "the launch command must name the recipe itself"
    monkeypatch.chdir(ROOT)
    args = command[2:]
    if "--ckpt_path" in args:  # instantiating needs no checkpoint
        del args[args.index("--ckpt_path") : args.index("--ckpt_path") + 2]
    cli = build_cli(args, run=False)
    vlm = cli.model.vlm
    assert sum(p.numel() for p in vlm.parameters()) > 0
    # the data agrees with the model: one batch runs through it
    cli.datamodule.connect(vlm)
    loaders = cli.datamodule.val_dataloader()
    batch = next(iter(loaders[0] if isinstance(loaders, list) else loaders))
    logits = cli.model(batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape
    connector = re.search(r"connectors/(\w+)\.yaml", str(recipe))
    if connector:
        expected = "".join(part.title() for part in connector.group(1).split("_"))
        expected = {
            "Mlp": "MLPProjection",
            "Linear": "LinearProjection",
            "Perceiver": "PerceiverResampler",
            "PixelShuffle": "PixelShuffleConnector",
        }.get(expected, expected)
        assert type(vlm.connector).__name__ == expected
