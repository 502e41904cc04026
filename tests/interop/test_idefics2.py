"""Golden checks against transformers' Idefics2: weights, logits, generation, round trip, processor settings."""

import copy
import json
import shutil

import pytest
import torch
from tiny_idefics2 import LATENTS, PATCH, images, save_tiny_idefics2
from tiny_models import build_tiny_vlm
from transformers import AutoProcessor, Idefics2ForConditionalGeneration

from vlmkit.adapters import LoRA, has_adapters
from vlmkit.interop import (
    Idefics2ProcessorSettings,
    export_idefics2,
    from_idefics2_inputs,
    idefics2_config,
    import_idefics2,
)
from vlmkit.interop.idefics2 import idefics2_to_vlmkit_keys, vlmkit_to_idefics2_keys
from vlmkit.text.tokenizer import END_OF_UTTERANCE_TOKEN, FAKE_IMAGE_TOKEN, IMAGE_TOKEN


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("idefics2")
    reference, processor = save_tiny_idefics2(path)
    return path, reference, processor


@pytest.fixture(scope="module")
def imported(checkpoint):
    # "full": plain weights under their own keys (a frozen LM gets its new token rows wrapped as adapters)
    return import_idefics2(str(checkpoint[0]), train_vision_encoder="full", train_language_model="full").eval()


def _batch(processor, splitting: bool):
    processor = copy.deepcopy(processor)
    processor.image_processor.do_image_splitting = splitting
    ims = images()
    texts = ["User:<image>What is in it?<image>And here<end_of_utterance>\nAssistant:", "<image>A photo of<image>"]
    return processor(images=[ims[:2], ims[2:]], text=texts, padding=True, return_tensors="pt")


def _vlmkit_logits(vlm, batch):
    pixel_values, patch_mask = from_idefics2_inputs(batch["pixel_values"], batch["pixel_attention_mask"], PATCH)
    return vlm(batch["input_ids"], batch["attention_mask"], pixel_values, patch_mask).logits


def test_import_maps_every_weight_and_the_token_ids(checkpoint, imported):
    _, reference, processor = checkpoint
    expected = idefics2_to_vlmkit_keys(reference.state_dict())
    got = imported.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    tokenizer = processor.tokenizer
    assert imported.image_token_id == reference.config.image_token_id == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    for token in (FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE_TOKEN):
        assert imported.tokenizer.convert_tokens_to_ids(token) == tokenizer.convert_tokens_to_ids(token)
    assert imported.language_model.vocab_size == reference.config.text_config.vocab_size == len(tokenizer)
    assert imported.num_image_tokens(24, 40) == LATENTS


@pytest.mark.integration
@pytest.mark.parametrize("splitting", [False, True])
def test_logits_equal_transformers(checkpoint, imported, splitting):
    _, reference, processor = checkpoint
    batch = _batch(processor, splitting)
    assert batch["pixel_values"].shape[1] == (10 if splitting else 2)  # several images per sample, padded
    assert not batch["pixel_attention_mask"].all()  # images of different sizes
    with torch.no_grad():
        expected = reference(**batch).logits
        got = _vlmkit_logits(imported, batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=0)


@pytest.mark.integration
def test_patch_packing_import_keeps_transformers_logits(checkpoint):
    _, reference, processor = checkpoint
    packed = import_idefics2(str(checkpoint[0]), patch_packing=True).eval()
    assert packed.vision_encoder.patch_packing
    batch = _batch(processor, splitting=False)
    with torch.no_grad():
        expected = reference(**batch).logits
        got = _vlmkit_logits(packed, batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=0)


@pytest.mark.integration
def test_greedy_generation_equals_transformers(checkpoint, imported):
    _, reference, processor = checkpoint
    ims = images()
    batch = processor(images=[[ims[0]], [ims[3]]], text=["<image>Describe"] * 2, return_tensors="pt")
    with torch.no_grad():
        expected = reference.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=None, min_length=0)
    pixel_values, patch_mask = from_idefics2_inputs(batch["pixel_values"], batch["pixel_attention_mask"], PATCH)
    got = imported.generate(
        batch["input_ids"], batch["attention_mask"], pixel_values, patch_mask, max_new_tokens=8, stop_token_ids=[]
    )
    assert torch.equal(got, expected[:, batch["input_ids"].shape[1] :])


@pytest.mark.integration
def test_export_import_round_trip(checkpoint, imported, tmp_path):
    path, reference, processor = checkpoint
    vlm = import_idefics2(str(path))  # frozen LM: its new-token rows are adapter-wrapped, merged by the export
    assert not any(p.requires_grad for p in vlm.vision_encoder.parameters())
    assert all(p.requires_grad for p in vlm.connector.parameters())
    assert has_adapters(vlm)  # the new token rows of the frozen LM train
    settings = Idefics2ProcessorSettings.from_pretrained(str(path))
    export_idefics2(vlm, tmp_path, settings)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(tmp_path.glob("*.bin"))

    again = import_idefics2(str(tmp_path), train_vision_encoder="full", train_language_model="full")
    original = imported.state_dict()
    assert set(again.state_dict()) == set(original)
    for key, value in again.state_dict().items():
        assert torch.equal(value, original[key]), key

    loaded, info = Idefics2ForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    exported = AutoProcessor.from_pretrained(tmp_path)
    assert exported.image_seq_len == LATENTS
    assert exported.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert exported.image_processor.size == processor.image_processor.size
    assert Idefics2ProcessorSettings.from_pretrained(str(tmp_path)) == settings
    eos = set(loaded.generation_config.eos_token_id)
    assert eos == {processor.tokenizer.eos_token_id, processor.tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE_TOKEN)}


@pytest.mark.integration
def test_exported_adapters_are_merged(checkpoint, tmp_path):
    path, _, processor = checkpoint
    vlm = import_idefics2(str(path), train_language_model=LoRA(rank=4, alpha=8, dropout=0.0)).eval()
    with torch.no_grad():  # LoRA B starts at 0: make the adapters change the function
        for name, param in vlm.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    batch = _batch(processor, splitting=False)
    with torch.no_grad():
        adapted = _vlmkit_logits(vlm, batch)
    export_idefics2(vlm, tmp_path)
    loaded = Idefics2ForConditionalGeneration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = loaded(**batch).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(adapted[real], expected[real], atol=1e-4, rtol=0)


def test_vlmkit_image_processor_agrees_on_images_that_need_no_resizing(checkpoint):
    """Rescale + normalisation agree exactly; resizing differs by design (see ``idefics2_processing``)."""
    _, _, processor = checkpoint
    settings = Idefics2ProcessorSettings.from_pretrained(str(checkpoint[0]))
    assert (settings.min_image_size, settings.max_image_size) == (24, 48)
    ours = settings.image_processor(PATCH)
    ims = images()
    for image in (ims[0], ims[1]):  # 40x24 and 24x48: inside 24..48, sides multiples of the patch
        theirs = processor.image_processor(image, return_tensors="pt")["pixel_values"][0, 0]
        torch.testing.assert_close(ours(image), theirs, atol=1e-5, rtol=0)
    # a downscaled image: same size here (aspect ratio kept, 8 | sides), bilinear vs bicubic pixels
    big = ims[2]  # 64x64 -> 48x48
    theirs = processor.image_processor(big, return_tensors="pt")["pixel_values"][0, 0]
    assert ours(big).shape == theirs.shape == (3, 48, 48)
    assert (ours(big) - theirs).abs().mean() < 0.2


def test_settings_fold_the_rescale_factor():
    settings = Idefics2ProcessorSettings.from_dict(
        {
            "size": {"shortest_edge": 378, "longest_edge": 980},
            "rescale_factor": 1 / 127.5,
            "image_mean": [1, 1, 1],
            "image_std": [1, 1, 1],
            "do_image_splitting": True,
        }
    )
    # Idefics2: x / 127.5 - 1 ; vlmkit: (x / 255 - 0.5) / 0.5 -- the same map
    assert settings.image_mean == pytest.approx((0.5,) * 3) and settings.image_std == pytest.approx((0.5,) * 3)
    assert settings.split_images and settings.max_image_size == 980
    with pytest.raises(ValueError, match="longest_edge"):
        Idefics2ProcessorSettings.from_dict({"size": {"height": 980, "width": 980}})


def test_from_idefics2_inputs_drops_padding_images_and_partial_patches():
    pixel_values = torch.zeros(2, 2, 3, 20, 17)
    mask = torch.zeros(2, 2, 20, 17, dtype=torch.long)
    pixel_values[0, 0], mask[0, 0] = 1.0, 1  # full image
    pixel_values[0, 1, :, :12, :10], mask[0, 1, :12, :10] = 2.0, 1  # 12x10 real pixels: 1x1 full patches
    pixel_values[1, 0, :, :16, :16], mask[1, 0, :16, :16] = 3.0, 1  # second sample: one image, then padding
    pixels, patch_mask = from_idefics2_inputs(pixel_values, mask, PATCH)
    assert pixels.shape == (3, 3, 16, 16) and patch_mask.shape == (3, 2, 2)
    assert patch_mask.sum((1, 2)).tolist() == [4, 1, 4]
    assert pixels[2].eq(3.0).all()


def test_import_checks_the_image_token_id(checkpoint, tmp_path):
    path = tmp_path / "broken"
    shutil.copytree(checkpoint[0], path)
    config = json.loads((path / "config.json").read_text())
    config["image_token_id"] = 3
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="image_token_id"):
        import_idefics2(str(path))


def test_export_names_what_is_not_idefics2(tiny_vlm, imported):
    with pytest.raises(ValueError, match="adapters"):
        idefics2_config(tiny_vlm)  # frozen LM: trainable new-token rows, not merged
    with pytest.raises(ValueError, match="projection_hidden_dim"):
        idefics2_config(build_tiny_vlm(train_language_model="full"))  # 4 x 64 projection; LM intermediate: 128
    assert idefics2_config(imported).perceiver_config.resampler_n_latents == LATENTS
    with pytest.raises(KeyError, match="no Idefics2 part"):
        vlmkit_to_idefics2_keys({"fusion.blocks.0.gate": torch.zeros(1)})


@pytest.mark.integration
def test_siglip_mistral_composition_exports_with_equal_logits(tmp_path):
    """The stage-1 composition (SigLIP tower, bucketed positions, perceiver, Mistral) is an Idefics2 checkpoint."""
    import functools

    from tiny_models import TINY_LM, TINY_SIGLIP

    from vlmkit.connectors import PerceiverResampler
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.model import VisionLanguageModel
    from vlmkit.vision import TransformersVisionEncoder

    torch.manual_seed(0)
    connector = functools.partial(
        PerceiverResampler,
        num_latents=4,
        depth=1,
        num_heads=2,
        head_dim=16,
        num_key_value_heads=1,
        projection_hidden_dim=TINY_LM["intermediate_size"],
    )
    vlm = VisionLanguageModel(
        TransformersVisionEncoder(config=TINY_SIGLIP, position_embedding="bucket"),
        connector,
        TransformersCausalLM(config=TINY_LM, tokenizer="synthetic"),
        train_vision_encoder="full",
        train_language_model="full",
    ).eval()
    export_idefics2(vlm, tmp_path)
    loaded = Idefics2ForConditionalGeneration.from_pretrained(tmp_path).eval()

    patch, tokenizer = TINY_SIGLIP["patch_size"], vlm.tokenizer
    pixel_values = torch.randn(2, 3, 32, 48)
    patch_mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    patch_mask[0, :4, :6], patch_mask[1, :3, :2] = True, True
    pixel_values[1, :, 3 * patch :] = pixel_values[1, :, :, 2 * patch :] = 0
    fake, image = tokenizer.convert_tokens_to_ids([FAKE_IMAGE_TOKEN, IMAGE_TOKEN])
    text = tokenizer.encode("What color is it?", add_special_tokens=False)
    input_ids = torch.tensor(
        [[fake] + [image] * 4 + [fake] + text, text[:3] + [fake] + [image] * 4 + [fake] + text[3:]]
    )
    pixel_attention_mask = patch_mask.repeat_interleave(patch, 1).repeat_interleave(patch, 2)  # [n, H, W]
    with torch.no_grad():
        got = vlm(input_ids, None, pixel_values, patch_mask).logits
        expected = loaded(
            input_ids=input_ids,
            pixel_values=pixel_values[:, None],  # one image per sample
            pixel_attention_mask=pixel_attention_mask[:, None],
        ).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.integration
@pytest.mark.parametrize("split", [False, True])
def test_vlm_processor_from_the_checkpoint_settings_feeds_the_imported_model(checkpoint, imported, split):
    from vlmkit.data import VLMCollator
    from vlmkit.text.template import Turn

    processor = Idefics2ProcessorSettings.from_pretrained(str(checkpoint[0])).vlm_processor(imported)
    sample = processor([images()[3]], [Turn("user", [{"type": "image"}, "What is it?"])], split_images=split)
    ids = sample["input_ids"].tolist()
    fake, image = imported.tokenizer.convert_tokens_to_ids([FAKE_IMAGE_TOKEN, IMAGE_TOKEN])
    views = 5 if split else 1
    assert ids.count(image) == views * LATENTS and ids.count(fake) == views + 1  # Idefics2's plain blocks
    assert all(view.shape[1] % PATCH == 0 and view.shape[1] <= 48 for view in sample["pixel_values"])
    batch = VLMCollator(imported.tokenizer.pad_token_id, PATCH)([sample])
    with torch.no_grad():
        logits = imported(
            batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]
        ).logits
    assert logits.shape == (1, len(ids), imported.language_model.vocab_size)


@pytest.mark.integration
def test_tied_embeddings_stay_tied(tmp_path):
    reference, processor = save_tiny_idefics2(tmp_path, tie_word_embeddings=True)
    vlm = import_idefics2(str(tmp_path), train_vision_encoder="full", train_language_model="full").eval()
    lm = vlm.language_model.model
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    batch = _batch(processor, splitting=False)
    with torch.no_grad():
        expected, got = reference(**batch).logits, _vlmkit_logits(vlm, batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=0)


def _damaged_copy(checkpoint, tmp_path, edit):
    """A copy of the tiny checkpoint whose ``model.safetensors`` went through ``edit(state_dict)``."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "damaged"
    shutil.copytree(checkpoint[0], path)
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return str(path)


_PROJECTION = "model.connector.modality_projection.gate_proj.weight"


def _delete_lm_head(tensors):
    del tensors["lm_head.weight"]


def _rename_projection(tensors):
    tensors[_PROJECTION.replace("gate_proj", "gate_projection")] = tensors.pop(_PROJECTION)


def _add_extra(tensors):
    tensors["model.connector.extra.weight"] = torch.zeros(3)


def _reshape_latents(tensors):
    tensors["model.connector.perceiver_resampler.latents"] = torch.zeros(5, 64)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_delete_lm_head, ["1 model weights are not in the checkpoint: lm_head.weight"]),
        (
            _rename_projection,
            [
                "1 checkpoint tensors map to no model weight: " + _PROJECTION.replace("gate_proj", "gate_projection"),
                f"1 model weights are not in the checkpoint: {_PROJECTION}",
            ],
        ),
        (_add_extra, ["1 checkpoint tensors map to no model weight: model.connector.extra.weight"]),
        (_reshape_latents, ["model.connector.perceiver_resampler.latents (5, 64) (the model's is (8, 64))"]),
    ],
    ids=["deleted", "renamed", "extra", "wrong_shape"],
)
def test_import_fails_naming_each_damaged_tensor(checkpoint, tmp_path, edit, named):
    """transformers would re-initialise a missing weight at random and load anyway; vlmkit refuses."""
    path = _damaged_copy(checkpoint, tmp_path, edit)
    with pytest.raises(ValueError, match="does not match its Idefics2 config") as error:
        import_idefics2(path)
    for text in named:
        assert text in str(error.value)


def test_import_names_every_damage_at_once(checkpoint, tmp_path):
    def edit(tensors):
        for damage in (_delete_lm_head, _rename_projection, _add_extra, _reshape_latents):
            damage(tensors)
        del tensors["model.text_model.norm.weight"]

    with pytest.raises(ValueError) as error:
        import_idefics2(_damaged_copy(checkpoint, tmp_path, edit))
    message = str(error.value)
    assert "2 checkpoint tensors map to no model weight" in message
    missing = f"3 model weights are not in the checkpoint: lm_head.weight, {_PROJECTION}, model.text_model.norm.weight"
    assert missing in message
    assert "1 tensors have the wrong shape" in message


def test_import_accepts_the_rotary_buffer_of_old_checkpoints(checkpoint, tmp_path, imported):
    """transformers ignores a saved ``rotary_emb.inv_freq``; it is computed from the config, as without it."""

    def edit(tensors):
        tensors["model.text_model.rotary_emb.inv_freq"] = torch.full((8,), 7.0)

    vlm = import_idefics2(_damaged_copy(checkpoint, tmp_path, edit), train_language_model="full")
    rotary = "language_model.model.model.rotary_emb.inv_freq"
    assert torch.equal(dict(vlm.named_buffers())[rotary], dict(imported.named_buffers())[rotary])


def test_import_reads_sharded_checkpoints(checkpoint, imported, tmp_path):
    reference, _ = save_tiny_idefics2(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("*.safetensors"))) > 2
    vlm = import_idefics2(str(tmp_path), train_vision_encoder="full", train_language_model="full")
    got = vlm.state_dict()
    for key, value in imported.state_dict().items():  # the same seed: the same weights as the single file
        assert torch.equal(got[key], value), key


def test_import_fails_on_a_shard_that_lacks_a_listed_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    save_tiny_idefics2(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["lm_head.weight"]
    tensors = load_file(tmp_path / shard)
    del tensors["lm_head.weight"]
    save_file(tensors, tmp_path / shard, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"lm_head.weight is listed under {shard} but that shard does not hold it"):
        import_idefics2(str(tmp_path))


def test_tied_checkpoint_without_lm_head_imports_and_a_different_one_fails(tmp_path):
    from safetensors.torch import load_file, save_file

    save_tiny_idefics2(tmp_path, tie_word_embeddings=True)
    tensors = load_file(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in tensors  # tied: transformers does not save it
    vlm = import_idefics2(str(tmp_path), train_language_model="full")
    lm = vlm.language_model.model
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    tensors["lm_head.weight"] = tensors["model.text_model.embed_tokens.weight"] + 1
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="holds a different lm_head.weight"):
        import_idefics2(str(tmp_path))


@pytest.mark.parametrize("change", ["config_vocabulary_shrunk", "tokenizer_grown"])
def test_text_vocabulary_smaller_than_the_tokenizer_is_vlmkit_s_error(checkpoint, tmp_path, change):
    """Checked from the configs before any weight loads (transformers would fail first on the weights' shapes)."""
    from transformers import AutoTokenizer

    path = tmp_path / "more_tokens"
    shutil.copytree(checkpoint[0], path)
    if change == "tokenizer_grown":
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.add_tokens(["<new_a>", "<new_b>"])
        tokenizer.save_pretrained(path)
    else:
        config = json.loads((path / "config.json").read_text())
        config["text_config"]["vocab_size"] -= 2
        (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"has \d+ tokens \(with the image tokens\), more than the checkpoint's text"):
        import_idefics2(str(path))


def test_generation_stops_follow_the_checkpoint_generation_config(checkpoint, tmp_path):
    path = tmp_path / "stops"
    shutil.copytree(checkpoint[0], path)
    generation = json.loads((path / "generation_config.json").read_text())
    generation["eos_token_id"] = [2, 7]
    (path / "generation_config.json").write_text(json.dumps(generation))
    vlm = import_idefics2(str(path))
    end_of_utterance = vlm.tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE_TOKEN)
    assert vlm.stop_token_ids == (2, 7, end_of_utterance)


def test_export_logs_changes_to_the_eos_list_and_pad_token(checkpoint, tmp_path, caplog):
    path = tmp_path / "source"
    shutil.copytree(checkpoint[0], path)
    generation = json.loads((path / "generation_config.json").read_text())
    generation["pad_token_id"] = 0
    (path / "generation_config.json").write_text(json.dumps(generation))
    vlm = import_idefics2(str(path), train_language_model="full")
    with caplog.at_level("WARNING", logger="vlmkit.interop.idefics2"):
        export_idefics2(vlm, tmp_path / "exported")
    end_of_utterance = vlm.tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE_TOKEN)
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"eos_token_id is [2, {end_of_utterance}]" in m and "had 2" in m for m in messages), messages
    pad = vlm.tokenizer.pad_token_id
    assert any(f"pad_token_id is {pad}" in m and "had 0" in m for m in messages), messages
    written = json.loads((tmp_path / "exported" / "generation_config.json").read_text())
    assert written["eos_token_id"] == [2, end_of_utterance] and written["pad_token_id"] == pad
