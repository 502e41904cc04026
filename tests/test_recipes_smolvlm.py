"""The SmolVLM recipes instantiate at full size on the ``meta`` device, with the published parameter counts.

The checkpoints cannot be downloaded here, so their published configs are written below, with where each number comes
from; ``import_idefics3`` is swapped for the same construction from these configs (random init on ``meta``, the
offline tokenizer), the trainer for one CPU process. transformers' own ``Idefics3ForConditionalGeneration`` built from
the same configs gives the reference counts: 256,484,928 and 507,482,304 parameters, the "256M" and "500M" of the
names.
"""

import inspect
import json
from pathlib import Path

import pytest
import torch
import yaml
from test_recipes import ROOT, launch_command
from test_recipes_idefics2 import _merge

from vlmkit.cli import build_cli
from vlmkit.interop import import_idefics3
from vlmkit.model import VisionLanguageModel
from vlmkit.text import load_tokenizer
from vlmkit.trainability import Trainability, count_parameters

RECIPES = sorted((ROOT / "recipes" / "smolvlm").glob("*.yaml"))

# google/siglip-base-patch16-512's vision tower, SmolVLM's encoder ("SigLIP base patch-16/512, 93M", blog post
# huggingface.co/blog/smolervlm; 93M counts SigLIP's pooling head, which SmolVLM drops: 86.4M here). Its config also
# appears as the vision_config of SmolVLM-256M-Instruct: hidden 768, 12 layers, 12 heads, image 512, patch 16
# (transformers' defaults: intermediate 3072, gelu_pytorch_tanh, layer_norm_eps 1e-6).
SIGLIP_B16_512 = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 512,
    "patch_size": 16,
}
# config.json of HuggingFaceTB/SmolVLM-256M-Instruct (model_type idefics3, Idefics3ForConditionalGeneration): the
# text_config values (head_dim 64, hidden 576, intermediate 1536, 9 heads, 3 key/value heads, 30 layers, 8192
# positions), image_token_id 49190 and scale_factor 4 as in the hub copy huggingface.co/Mattimax/
# DATA-AI_Smol256M-Instruct/blob/main/config.json (whose _name_or_path is that checkpoint); vocab_size 49280,
# rope_theta 100000, tie_word_embeddings false as in the SmolVLM-256M config parsed by several public test suites
# (e.g. a Rust `parses_nested_idefics3_config` test with this vision_config). SmolLM2-135M is the text model.
SMOLVLM_256M = {
    "vision_config": SIGLIP_B16_512,
    "text_config": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "vocab_size": 49280,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000,
        "tie_word_embeddings": False,
    },
    "scale_factor": 4,
    "tie_word_embeddings": False,
}
# config.json of HuggingFaceTB/SmolVLM-500M-Instruct: the text_config (hidden 960, intermediate 2560, 15 heads,
# 5 key/value heads, head_dim 64) and scale_factor 4 as in huggingface.co/vidore/ColSmolVLM-Instruct-500M-base
# (built from "models/SmolVLM-Instruct-500M"); 32 layers and vocab 49280 as SmolLM2-360M and the SmolVLM2-500M
# config of public test suites (hidden 960, vocab 49280, 32 layers, 15/5 heads, intermediate 2560).
SMOLVLM_500M = {
    **SMOLVLM_256M,
    "text_config": {
        **SMOLVLM_256M["text_config"],
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
    },
}
PUBLISHED = {"HuggingFaceTB/SmolVLM-256M-Instruct": SMOLVLM_256M, "HuggingFaceTB/SmolVLM-500M-Instruct": SMOLVLM_500M}
PARAMETERS = {"HuggingFaceTB/SmolVLM-256M-Instruct": 256_484_928, "HuggingFaceTB/SmolVLM-500M-Instruct": 507_482_304}


def _config(name: str):
    """The published config, with ``<image>`` where the offline tokenizer has it (the real one: id 49190)."""
    from transformers import Idefics3Config

    image_token_id = load_tokenizer("synthetic").convert_tokens_to_ids("<image>")
    return Idefics3Config(**PUBLISHED[name], image_token_id=image_token_id)


def offline_import_idefics3(
    path_or_name: str,
    train_vision_encoder: Trainability = "frozen",
    train_language_model: Trainability = "frozen",
    neftune_alpha: float = 0.0,
    gradient_checkpointing: bool = False,
    torch_dtype: str | None = None,
    attn_implementation: str | None = "sdpa",
    quantization: str | None = None,
    compute_dtype: str = "bfloat16",
) -> VisionLanguageModel:
    """``import_idefics3`` of a published SmolVLM config, without its weights (random init; meta under the test).

    ``quantization`` is accepted and not applied: bitsandbytes quantizes weights, and ``meta`` tensors have none.
    """
    from vlmkit.interop import idefics3_skeleton

    vlm = idefics3_skeleton(_config(path_or_name), tokenizer="synthetic")
    return VisionLanguageModel(
        vlm.vision_encoder,
        vlm.connector,
        vlm.language_model,
        vlm.fusion,
        train_vision_encoder=train_vision_encoder,
        train_language_model=train_language_model,
        neftune_alpha=neftune_alpha,
        gradient_checkpointing=gradient_checkpointing,
        tile_size=512,  # the processor's max_image_size of both checkpoints (one 512 px tile: 64 tokens)
    )


def offline_overlay(args: list[str], tmp_path: Path, name: str) -> Path:
    """A config layered last: the published config instead of the checkpoint, one CPU process, no logger."""
    config: dict = {}
    for path in [args[i + 1] for i, a in enumerate(args) if a == "--config"]:
        _merge(config, yaml.safe_load((ROOT / path).read_text()))
    vlm = config["model"]["vlm"]
    assert vlm["class_path"] == "vlmkit.interop.import_idefics3"
    inspect.signature(import_idefics3).bind(**vlm["init_args"])  # the recipe's arguments are import_idefics3's
    overlay = {
        "model": {
            "vlm": {"class_path": "test_recipes_smolvlm.offline_import_idefics3", "init_args": {"path_or_name": name}}
        },
        "trainer": {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "logger": False},
    }
    path = tmp_path / "offline.yaml"
    path.write_text(json.dumps(overlay))
    return path


def test_the_recipes_exist():
    assert {p.name for p in RECIPES} == {"256m_qlora_1gpu.yaml", "256m_full_fsdp2.yaml"}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_the_published_configs_give_transformers_model_part_by_part(name):
    """vlmkit's parts for SmolVLM-256M/500M hold exactly the parameters of transformers' model."""
    from transformers import Idefics3ForConditionalGeneration

    from vlmkit.interop import idefics3_skeleton

    config = _config(name)
    with torch.device("meta"):
        vlm = idefics3_skeleton(config, tokenizer="synthetic")
        reference = Idefics3ForConditionalGeneration(config)
    model = reference.model
    assert count_parameters(vlm.vision_encoder) == count_parameters(model.vision_model) == 86_433_024
    assert count_parameters(vlm.connector) == count_parameters(model.connector)
    assert count_parameters(vlm.language_model) == count_parameters(model.text_model) + count_parameters(
        reference.lm_head
    )
    assert count_parameters(vlm) == count_parameters(reference) == PARAMETERS[name]
    assert vlm.num_image_tokens(512, 512) == 64  # "64 visual tokens to encode image patches of size 512x512"


@pytest.mark.integration
@pytest.mark.parametrize("name", list(PUBLISHED), ids=["256m", "500m"])
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_instantiates_at_full_size_on_meta(recipe, name, tmp_path, monkeypatch):
    command = launch_command(recipe)
    assert command[:2] == ["vlmkit", "fit"] and str(recipe.relative_to(ROOT)) in command
    monkeypatch.chdir(ROOT)
    args = [*command[2:], "--config", str(offline_overlay(command[2:], tmp_path, name))]
    with torch.device("meta"):
        cli = build_cli(args, run=False)
    vlm = cli.model.vlm
    assert all(p.is_meta for p in vlm.parameters())
    recipe_args = yaml.safe_load(recipe.read_text())["model"]["vlm"]["init_args"]
    lora = sum(p.numel() for n, p in vlm.language_model.named_parameters() if "lora_" in n)
    total = count_parameters(vlm)
    trainable = count_parameters(vlm, trainable_only=True)
    text = SMOLVLM_256M["text_config"] if "256M" in name else SMOLVLM_500M["text_config"]
    if recipe_args.get("quantization"):  # QLoRA: rank-16 LoRA on q, k, v, o, gate, up, down of every decoder layer
        d, kv, ff = text["hidden_size"], text["num_key_value_heads"] * 64, text["intermediate_size"]
        per_layer = 16 * (2 * (d + d) + 2 * (d + kv) + 3 * (d + ff))
        assert lora == text["num_hidden_layers"] * per_layer
        new_rows = 2 * 3 * d  # the 3 image tokens' trainable rows of the embeddings and of the (untied) head
        assert total - lora - new_rows == PARAMETERS[name]
        assert count_parameters(vlm.vision_encoder, trainable_only=True) == 0
        assert trainable == lora + count_parameters(vlm.connector) + new_rows
        assert recipe_args["compute_dtype"] == "bfloat16" and cli.config.trainer.devices == 1
    else:  # full fine-tuning under FSDP2
        assert lora == 0 and total == trainable == PARAMETERS[name]
        assert cli.config.model.sharding.init_args.param_dtype == "bfloat16"
        strategy = yaml.safe_load(recipe.read_text())["trainer"]["strategy"]  # (the overlay runs one CPU process)
        assert strategy["class_path"] == "vlmkit.training.FSDP2Strategy"
    assert vlm.tile_size == 512 and vlm.connector.scale_factor == 4
    assert {c.__name__ for c in vlm.block_classes()} == {"Idefics3EncoderLayer", "LlamaDecoderLayer"}
    source = cli.config.data.init_args.sources[0].init_args
    assert source.max_image_size == 2048 and source.image_splitting == 1.0  # SmolVLM's processor: tiles, 2048 px
    print(f"\n{recipe.name} {name}: total {total:,} trainable {trainable:,} (LoRA {lora:,})")
