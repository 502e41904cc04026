"""The real-scale Idefics2 recipes instantiate at full size on the ``meta`` device (no weights, no memory).

Each recipe's launch command is parsed as ``tests/test_recipes.py`` does; the two pretrained checkpoints it names
(SigLIP-SO400M, Mistral-7B) are swapped for their published configs and the offline tokenizer, and the trainer for a
single CPU process, so nothing is downloaded; everything else (adapters, connector, optimizer, data mixture) is the
recipe's own. Parameter counts are checked against the paper's 8B (SigLIP-SO400M ~0.4B + Mistral-7B ~7.2B + connector).
"""

import inspect
import json
from pathlib import Path

import pytest
import torch
import yaml
from test_recipes import ROOT, launch_command

from vlmkit.cli import build_cli
from vlmkit.interop import import_idefics2
from vlmkit.model import VisionLanguageModel
from vlmkit.text import load_tokenizer
from vlmkit.trainability import Trainability, count_parameters

RECIPES = sorted((ROOT / "recipes" / "idefics2").glob("*.yaml"))

# vision_config of google/siglip-so400m-patch14-384
SIGLIP_SO400M = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
# config.json of mistralai/Mistral-7B-v0.1
MISTRAL_7B = {
    "model_type": "mistral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
}
PUBLISHED = {"google/siglip-so400m-patch14-384": SIGLIP_SO400M, "mistralai/Mistral-7B-v0.1": MISTRAL_7B}
# config.json of HuggingFaceM4/idefics2-8b(-base): the SO400M tower with a 70 x 70 position table, Mistral-7B + 3 tokens
IDEFICS2_8B = {
    "vision_config": {**SIGLIP_SO400M, "model_type": "idefics2_vision", "image_size": 980},
    "perceiver_config": {
        "hidden_size": 4096,
        "rms_norm_eps": 1e-5,
        "resampler_n_latents": 64,
        "resampler_depth": 3,
        "resampler_n_heads": 16,
        "resampler_head_dim": 96,
        "num_key_value_heads": 4,
    },
    "text_config": {**MISTRAL_7B, "vocab_size": 32003},
}


def offline_import_idefics2(
    path_or_name: str,
    train_vision_encoder: Trainability = "frozen",
    train_language_model: Trainability = "frozen",
    neftune_alpha: float = 0.0,
    gradient_checkpointing: bool = False,
    torch_dtype: str | None = None,
    attn_implementation: str | None = "sdpa",
) -> VisionLanguageModel:
    """``import_idefics2`` of the released 8B config, without its weights (random init; meta under the test)."""
    from transformers import Idefics2Config

    from vlmkit.interop import idefics2_skeleton

    image_token_id = load_tokenizer("synthetic").convert_tokens_to_ids("<image>")
    vlm = idefics2_skeleton(Idefics2Config(**IDEFICS2_8B, image_token_id=image_token_id), tokenizer="synthetic")
    return VisionLanguageModel(
        vlm.vision_encoder,
        vlm.connector,
        vlm.language_model,
        vlm.fusion,
        train_vision_encoder=train_vision_encoder,
        train_language_model=train_language_model,
        neftune_alpha=neftune_alpha,
        gradient_checkpointing=gradient_checkpointing,
    )


def offline_overlay(args: list[str], tmp_path: Path) -> Path:
    """A config layered last: published configs instead of checkpoints, one CPU process, no logger."""
    config: dict = {}
    for path in [args[i + 1] for i, a in enumerate(args) if a == "--config"]:
        _merge(config, yaml.safe_load((ROOT / path).read_text()))
    vlm = config["model"]["vlm"]
    if vlm["class_path"] == "vlmkit.interop.import_idefics2":  # same arguments, the 8B config without weights
        inspect.signature(import_idefics2).bind(**vlm["init_args"])
        overlay_vlm = {"class_path": "test_recipes_idefics2.offline_import_idefics2"}
    else:
        overlay_vlm = {"init_args": {}}
        for part in ("vision_encoder", "language_model"):
            name = vlm["init_args"][part]["init_args"].get("name_or_path")
            assert name in PUBLISHED, f"{part}: {name!r} has no published config in this test"
            init_args = {"name_or_path": None, "config": PUBLISHED[name], "attn_implementation": "sdpa"}
            if part == "language_model":
                init_args["tokenizer"] = "synthetic"  # no download; the real one only adds 3 rows (Idefics2: 32003)
            if vlm["init_args"][part]["init_args"].get("quantization"):
                init_args["quantization"] = None  # bitsandbytes quantizes while loading weights: none on `meta`
            overlay_vlm["init_args"][part] = {"init_args": init_args}
    overlay = {
        "model": {"vlm": overlay_vlm},
        "trainer": {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "logger": False},
    }
    path = tmp_path / "offline.yaml"
    path.write_text(json.dumps(overlay))
    return path


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def test_the_four_stages_exist():
    names = {p.name for p in RECIPES}
    assert names == {"8b_pretrain_stage1.yaml", "8b_pretrain_stage2.yaml", "8b_instruct.yaml", "8b_chat.yaml"}


@pytest.mark.integration
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_instantiates_at_full_size_on_meta(recipe, tmp_path, monkeypatch):
    command = launch_command(recipe)
    assert command[:2] == ["vlmkit", "fit"] and str(recipe.relative_to(ROOT)) in command
    monkeypatch.chdir(ROOT)
    args = command[2:]
    if "--model.init_from" in args:  # the previous stage's checkpoint: not needed to instantiate
        del args[args.index("--model.init_from") : args.index("--model.init_from") + 2]
    args += ["--config", str(offline_overlay(args, tmp_path))]
    with torch.device("meta"):
        cli = build_cli(args, run=False)
    vlm = cli.model.vlm
    assert all(p.is_meta for p in vlm.parameters())

    vision = count_parameters(vlm.vision_encoder)
    connector = count_parameters(vlm.connector)
    language = count_parameters(vlm.language_model)
    trainable = count_parameters(vlm, trainable_only=True)
    assert 0.40e9 < vision < 0.45e9  # SigLIP-SO400M (+ LoRA)
    assert 7.24e9 < language < 7.35e9  # Mistral-7B (+ LoRA/DoRA)
    assert 0.70e9 < connector < 0.80e9  # MLP projection 1152 -> 14336 -> 4096 + 3 perceiver layers of width 4096
    assert 8.3e9 < vision + connector + language < 8.5e9  # "Idefics2, 8B"; the released model: 8.40B
    assert connector < trainable < connector + 0.2e9  # backbones through adapters only
    assert vlm.connector.num_latents == 64 and vlm.vision_encoder.patch_size == 14
    assert {c.__name__ for c in vlm.block_classes()} >= {"PerceiverLayer", "MistralDecoderLayer"}

    config = cli.config
    assert config.model.optimizer.init_args.lr <= 1e-4
    sources = config.data.init_args.sources
    weights = {s.init_args.name: s.init_args.weight for s in sources}
    assert sum(weights.values()) == pytest.approx(1.0)
    print(f"\n{recipe.name}: vision {vision:,} connector {connector:,} language {language:,} trainable {trainable:,}")


def test_the_released_8b_config_gives_the_released_model():
    """vlmkit's parts for Idefics2-8B hold exactly the parameters of transformers' model (8,402,768,112), per part."""
    from transformers import Idefics2Config, Idefics2ForConditionalGeneration

    from vlmkit.interop import idefics2_skeleton

    config = Idefics2Config(**IDEFICS2_8B, image_token_id=load_tokenizer("synthetic").convert_tokens_to_ids("<image>"))
    with torch.device("meta"):
        vlm = idefics2_skeleton(config, tokenizer="synthetic")
        reference = Idefics2ForConditionalGeneration(config)
    model = reference.model
    assert count_parameters(vlm.vision_encoder) == count_parameters(model.vision_model) == 417_792_240
    assert count_parameters(vlm.connector) == count_parameters(model.connector) == 743_219_200
    assert count_parameters(vlm.language_model) == count_parameters(model.text_model) + count_parameters(
        reference.lm_head
    )
    assert count_parameters(vlm) == count_parameters(reference) == 8_402_768_112


@pytest.mark.integration
def test_qlora_one_gpu_recipe_instantiates_at_full_size_on_meta(tmp_path, monkeypatch):
    """``recipes/finetune/qlora_1gpu.yaml``: Mistral-7B in NF4 + LoRA, SigLIP frozen (no quantization on meta)."""
    recipe = ROOT / "recipes" / "finetune" / "qlora_1gpu.yaml"
    command = launch_command(recipe)
    assert command[:2] == ["vlmkit", "fit"] and str(recipe.relative_to(ROOT)) in command
    config = yaml.safe_load(recipe.read_text())
    lm_args = config["model"]["vlm"]["init_args"]["language_model"]["init_args"]
    assert lm_args["quantization"] == "nf4" and lm_args["compute_dtype"] == "bfloat16"
    assert config["trainer"]["devices"] == 1 and config["model"]["save_trainable_only"] is True
    monkeypatch.chdir(ROOT)
    args = [*command[2:], "--config", str(offline_overlay(command[2:], tmp_path))]
    with torch.device("meta"):
        cli = build_cli(args, run=False)
    vlm = cli.model.vlm
    lora = sum(p.numel() for n, p in vlm.language_model.named_parameters() if "lora_" in n)
    # rank 16 on q, k, v, o, gate, up, down of 32 layers: 16 * (in + out) summed = 41.9 M
    assert lora == 32 * 16 * (2 * (4096 + 4096) + 2 * (4096 + 1024) + 3 * (4096 + 14336))
    assert count_parameters(vlm.vision_encoder, trainable_only=True) == 0
    trainable = count_parameters(vlm, trainable_only=True)
    assert trainable == lora + count_parameters(vlm.connector) + 2 * 3 * 4096  # + the 3 new tokens' rows, in and out
    assert 7.24e9 < count_parameters(vlm.language_model) - lora < 7.26e9
