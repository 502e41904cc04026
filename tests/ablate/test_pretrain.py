"""Toy unimodal pretraining: deterministic data, labels that match the pixels, backbones loadable by path."""

import json
import os

import pytest
import torch
from PIL import Image
from tiny_models import TINY_LM, TINY_SIGLIP

from vlmkit.ablate.pretrain import (
    NUM_OBJECT_CLASSES,
    PretrainSettings,
    describe,
    is_prepared,
    object_mask,
    patch_labels,
    prepare_backbones,
    text_document,
)
from vlmkit.data.synthetic import COLORS, SHAPES, make_scene


def test_a_scene_is_described_left_to_right_with_sides():
    objects = (("square", "blue", (40, 0, 50, 10)), ("circle", "red", (2, 5, 12, 15)))
    assert describe(objects, width=60) == "a red circle on the left and a blue square on the right."
    assert describe((("triangle", "orange", (0, 0, 9, 9)),), width=20) == "an orange triangle on the left."


def test_text_documents_are_deterministic_and_answerable_from_their_context():
    docs = [text_document(0, i) for i in range(200)]
    assert docs == [text_document(0, i) for i in range(200)]
    conversations = [d for d in docs if d[0].role == "user"]
    assert len(conversations) > 150 and any(d[0].role == "text" for d in docs)  # and some PDF-like pages
    for user, assistant in conversations:
        context, answer = user.content[0], assistant.content[0]
        if "What color is the" in context:
            assert answer in context  # the colour is named in the description
        if "What word is written" in context:
            assert f'"{answer}"' in context


def test_patch_labels_name_the_object_under_each_patch():
    sample, objects = make_scene(0, 5, "count", 32, 48, 3)
    mask = object_mask(objects, sample.image.width, sample.image.height)
    pixels = torch.tensor(list(sample.image.getdata()))  # [h * w, 3]
    labels = torch.tensor(list(mask.getdata()))
    for kind, color, _ in objects:
        label = 1 + list(COLORS).index(color) * len(SHAPES) + SHAPES.index(kind)
        drawn = (pixels == torch.tensor(COLORS[color])).all(-1)
        assert (labels == label).any() and bool((drawn[labels == label]).float().mean() > 0.9)
    assert bool((labels[~(pixels[:, None] == torch.tensor(list(COLORS.values()))).all(-1).any(-1)] == 0).all())
    cells = patch_labels(Image.fromarray(torch.arange(16, dtype=torch.uint8).reshape(4, 4).numpy()), 2, 2)
    assert cells.tolist() == [5, 7, 13, 15]  # the centre pixel of each 2 x 2 cell
    assert int(patch_labels(mask, 6, 6).max()) < NUM_OBJECT_CLASSES


@pytest.mark.integration
def test_prepare_builds_loadable_backbones_once_deterministically(tmp_path):
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.vision import TransformersVisionEncoder

    settings = PretrainSettings(
        lm_steps=4, vision_steps=4, batch_size=4, eval_samples=8, lm_config=dict(TINY_LM),
        vision_config=dict(TINY_SIGLIP, vision_use_head=False),
    )  # fmt: skip
    manifest = prepare_backbones(tmp_path / "a", settings)
    assert is_prepared(tmp_path / "a") and manifest["lm"]["steps"] == 4 and manifest["lm_short"]["steps"] == 1
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == manifest
    assert set(manifest["vision"]) >= {"object_patch_accuracy", "count_accuracy", "word_accuracy"}
    stamp = os.stat(tmp_path / "a" / "manifest.json").st_mtime_ns
    assert prepare_backbones(tmp_path / "a", settings) == manifest  # marker present: nothing rebuilt
    assert os.stat(tmp_path / "a" / "manifest.json").st_mtime_ns == stamp
    lm = TransformersCausalLM(name_or_path=str(tmp_path / "a" / "lm"))
    short = TransformersCausalLM(name_or_path=str(tmp_path / "a" / "lm_short"))
    assert lm.tokenizer.encode("User:") == short.tokenizer.encode("User:")
    assert not torch.equal(lm.get_input_embeddings().weight, short.get_input_embeddings().weight)
    encoder = TransformersVisionEncoder(name_or_path=str(tmp_path / "a" / "vision"))
    assert encoder(torch.zeros(1, 3, 32, 16)).shape == (1, 8, TINY_SIGLIP["hidden_size"])
    prepare_backbones(tmp_path / "b", settings)
    for name in ("lm", "vision"):
        again = (tmp_path / "b" / name / "model.safetensors").read_bytes()
        assert again == (tmp_path / "a" / name / "model.safetensors").read_bytes()  # same seed, same weights
