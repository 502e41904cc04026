"""``save_pretrained`` / ``from_pretrained``: any composition comes back computing the same, strictly and safely."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import tiny_composition

from vlmkit.model import VisionLanguageModel
from vlmkit.trainability import count_parameters

MLP = {"class_path": "vlmkit.connectors.MLPProjection", "init_args": {}}
CROSS_ATTENTION = {
    "class_path": "vlmkit.fusion.CrossAttentionFusion",
    "init_args": {"every_n_layers": 1, "num_heads": 2, "gate_init": 0.5},
}


def _inputs(vlm, seed=0):
    """One sample: text, an image's placeholders, text; a 32x24 image."""
    generator = torch.Generator().manual_seed(seed)
    placeholders = vlm.num_image_tokens(32, 24)
    text = torch.randint(3, 200, (6,), generator=generator)
    image = torch.full((placeholders,), vlm.image_token_id)
    ids = torch.cat([text[:3], image, text[3:]])[None]
    return ids, torch.ones_like(ids), torch.rand(1, 3, 32, 24, generator=generator)


def _logits(vlm, seed=0):
    with torch.no_grad():
        return vlm.eval()(*_inputs(vlm, seed)).logits


@pytest.mark.parametrize(
    "composition",
    [tiny_composition(), tiny_composition(connector=MLP, fusion=CROSS_ATTENTION)],
    ids=["autoregressive-perceiver", "cross_attention-mlp"],
)
def test_round_trip_gives_the_same_logits(composition, tmp_path):
    torch.manual_seed(0)
    vlm = VisionLanguageModel.from_config(composition)
    vlm.save_pretrained(tmp_path, processor={"max_image_size": 64})
    torch.manual_seed(1)  # a different random init: every weight must come from the file
    loaded = VisionLanguageModel.from_pretrained(tmp_path)
    assert type(loaded.connector) is type(vlm.connector) and type(loaded.fusion) is type(vlm.fusion)
    assert torch.equal(_logits(loaded), _logits(vlm))
    saved = json.loads((tmp_path / "vlmkit_config.json").read_text())
    assert saved["processor"] == {"max_image_size": 64}
    assert saved["model"]["init_args"]["connector"]["class_path"] == composition["init_args"]["connector"]["class_path"]


def test_a_lora_trained_model_comes_back_with_its_adapters(tmp_path):
    composition = tiny_composition(train_language_model="lora", train_vision_encoder="lora")
    torch.manual_seed(0)
    vlm = VisionLanguageModel.from_config(composition)
    base = _logits(vlm)
    with torch.no_grad():  # "training": adapters and the new token rows move away from their init
        for name, param in vlm.named_parameters():
            if param.requires_grad and ("lora_B" in name or "delta" in name):
                param.add_(0.05 * torch.randn_like(param))
    trained = _logits(vlm)
    assert not torch.allclose(trained, base)
    vlm.save_pretrained(tmp_path)
    loaded = VisionLanguageModel.from_pretrained(tmp_path)
    assert torch.equal(_logits(loaded), trained)
    lora_keys = [k for k in load_file(tmp_path / "model.safetensors") if "lora_B" in k]
    assert lora_keys, "adapters are saved with the base weights"
    assert sorted(n for n, p in loaded.named_parameters() if p.requires_grad) == sorted(
        n for n, p in vlm.named_parameters() if p.requires_grad
    ), "the loaded model trains the same parameters"


def test_a_tied_head_is_stored_once_and_tied_again(tmp_path):
    composition = tiny_composition()
    composition["init_args"]["language_model"]["init_args"]["config"]["tie_word_embeddings"] = True
    vlm = VisionLanguageModel.from_config(composition)
    vlm.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    tied = [k for k in vlm.state_dict() if k.endswith(("embed_tokens.weight", "lm_head.weight"))]
    assert len(tied) == 2 and len(set(tied) & set(stored)) == 1  # the head shares the embeddings' tensor: once
    loaded = VisionLanguageModel.from_pretrained(tmp_path)
    lm = loaded.language_model
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    assert torch.equal(_logits(loaded), _logits(vlm))


def test_loading_is_strict_and_names_the_tensors(tmp_path):
    vlm = VisionLanguageModel.from_config(tiny_composition())
    vlm.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    dropped = "connector.latents"
    assert dropped in state
    del state[dropped]
    state["connector.extra_weight"] = torch.zeros(2)
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"missing from the file: connector\.latents.*not in the model: "
                                         r"connector\.extra_weight"):  # fmt: skip
        VisionLanguageModel.from_pretrained(tmp_path)


def test_a_weight_of_another_shape_is_named(tmp_path):
    VisionLanguageModel.from_config(tiny_composition()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "vlmkit_config.json").read_text())
    config["model"]["init_args"]["connector"]["init_args"]["num_latents"] = 8
    (tmp_path / "vlmkit_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"connector\.latents \(4, 64\) vs model \(8, 64\)"):
        VisionLanguageModel.from_pretrained(tmp_path)


def test_weights_are_read_from_safetensors_only(tmp_path):
    VisionLanguageModel.from_config(tiny_composition()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"anything": 1}, tmp_path / "pytorch_model.bin")  # a pickle is never read
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        VisionLanguageModel.from_pretrained(tmp_path)


def test_the_model_card_lists_parameters_per_part_recipe_and_metrics(tmp_path):
    vlm = VisionLanguageModel.from_config(tiny_composition(train_language_model="lora"))
    recipe = {"trainer": {"max_steps": 1500}, "model": {"vlm": vlm.config}}
    vlm.save_pretrained(tmp_path, recipe=recipe, metrics={"val/accuracy": 0.97})
    card = (tmp_path / "README.md").read_text()
    for part in ("vision_encoder", "connector", "fusion", "language_model"):
        module = getattr(vlm, part)
        total, trainable = count_parameters(module), count_parameters(module, True)
        assert f"| {part} | " in card and f"| {total:,} | {trainable:,} |" in card
    assert "vlmkit.connectors.PerceiverResampler" in card
    assert "| val/accuracy | 0.97 |" in card
    assert "max_steps: 1500" in card and "train_language_model=lora" in card


def test_a_model_composed_in_python_needs_its_composition(tiny_vlm, tmp_path):
    with pytest.raises(ValueError, match="VisionLanguageModel.from_config"):
        tiny_vlm.save_pretrained(tmp_path)


def test_a_composition_that_does_not_parse_is_named():
    composition = tiny_composition()
    composition["init_args"]["connector"]["init_args"]["num_latentz"] = 4
    with pytest.raises(ValueError, match="num_latentz"):
        VisionLanguageModel.from_config(composition)


def test_push_to_hub_uploads_the_saved_folder(monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            from pathlib import Path

            files = sorted(p.name for p in Path(folder_path).iterdir())
            calls.append(("upload_folder", repo_id, files, commit_message))
            return "commit-url"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    vlm = VisionLanguageModel.from_config(tiny_composition())
    assert vlm.push_to_hub("me/tiny-vlm", private=True, token="hf_x") == "commit-url"
    assert calls == [
        ("init", "hf_x"),
        ("create_repo", "me/tiny-vlm", True, True),
        (
            "upload_folder",
            "me/tiny-vlm",
            ["README.md", "model.safetensors", "tokenizer", "vlmkit_config.json"],
            "Upload vlmkit model",
        ),
    ]
