"""Golden checks against transformers' Idefics3 and SmolVLM: weights, logits, generation, round trip, strict import."""

import copy
import functools
import json
import shutil

import pytest
import torch
from tiny_idefics3 import SPECS, images, save_tiny
from transformers import AutoProcessor, Idefics3ForConditionalGeneration, SmolVLMForConditionalGeneration

from vlmkit.adapters import LoRA, has_adapters
from vlmkit.connectors import PixelShuffleConnector
from vlmkit.interop import (
    IDEFICS3_CHAT_TEMPLATE,
    SMOLVLM_CHAT_TEMPLATE,
    Idefics3ProcessorSettings,
    export_idefics3,
    from_idefics3_inputs,
    idefics3_config,
    import_idefics3,
)
from vlmkit.interop.idefics3 import idefics3_to_vlmkit_keys, vlmkit_to_idefics3_keys
from vlmkit.text.tokenizer import END_OF_UTTERANCE_TOKEN, FAKE_IMAGE_TOKEN, IMAGE_TOKEN

FAMILIES = ["idefics3", "smolvlm"]
MODEL_CLASSES = {"idefics3": Idefics3ForConditionalGeneration, "smolvlm": SmolVLMForConditionalGeneration}
TEMPLATES = {"idefics3": IDEFICS3_CHAT_TEMPLATE, "smolvlm": SMOLVLM_CHAT_TEMPLATE}


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    family = request.param
    path = tmp_path_factory.mktemp(family)
    reference, processor = save_tiny(family, path)
    return family, path, reference, processor


@pytest.fixture(scope="module")
def imported(checkpoint):
    # "full": plain weights under their own keys (a frozen LM gets its new token rows wrapped as adapters)
    return import_idefics3(str(checkpoint[1]), train_vision_encoder="full", train_language_model="full").eval()


def _batch(processor, splitting: bool):
    processor = copy.deepcopy(processor)
    ims = images()
    texts = ["User:<image>What is in it?<image>And here<end_of_utterance>\nAssistant:", "<image>A photo of<image>"]
    return processor(
        images=[ims[:2], ims[2:4]], text=texts, padding=True, return_tensors="pt", do_image_splitting=splitting
    )


def _vlmkit_logits(vlm, batch, patch):
    pixel_values, patch_mask = from_idefics3_inputs(batch["pixel_values"], batch.get("pixel_attention_mask"), patch)
    return vlm(batch["input_ids"], batch["attention_mask"], pixel_values, patch_mask).logits


def test_import_maps_every_weight_the_tokens_and_the_tiling(checkpoint, imported):
    family, path, reference, processor = checkpoint
    spec = SPECS[family]
    expected = idefics3_to_vlmkit_keys(reference.state_dict())
    got = imported.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    tokenizer = processor.tokenizer
    assert imported.image_token_id == reference.config.image_token_id == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    for token in (FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE_TOKEN):
        assert imported.tokenizer.convert_tokens_to_ids(token) == tokenizer.convert_tokens_to_ids(token)
    assert isinstance(imported.connector, PixelShuffleConnector)
    assert imported.connector.scale_factor == reference.config.scale_factor
    assert imported.tile_size == spec["tile"] and imported.vision_encoder.model_type == f"{family}_vision"
    assert imported.num_image_tokens(spec["tile"], spec["tile"]) == processor.image_seq_len
    assert imported.chat_template == TEMPLATES[family] == processor.chat_template
    tied = imported.language_model.model
    assert (tied.get_output_embeddings().weight is tied.get_input_embeddings().weight) == spec["tied"]


@pytest.mark.integration
@pytest.mark.parametrize("splitting", [False, True])
def test_logits_equal_transformers(checkpoint, imported, splitting):
    family, _, reference, processor = checkpoint
    batch = _batch(processor, splitting)
    assert batch["pixel_values"].shape[1] == (17 if splitting else 2)  # 2 images of several tiles each + padding
    with torch.no_grad():
        expected = reference(**batch).logits
        got = _vlmkit_logits(imported, batch, SPECS[family]["patch"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=0)


@pytest.mark.integration
def test_greedy_generation_equals_transformers(checkpoint, imported):
    family, _, reference, processor = checkpoint
    ims = images()
    batch = processor(images=[[ims[0]], [ims[3]]], text=["<image>Describe"] * 2, return_tensors="pt")
    with torch.no_grad():
        expected = reference.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=None, min_length=0)
    pixel_values, patch_mask = from_idefics3_inputs(
        batch["pixel_values"], batch["pixel_attention_mask"], SPECS[family]["patch"]
    )
    got = imported.generate(
        batch["input_ids"], batch["attention_mask"], pixel_values, patch_mask, max_new_tokens=8, stop_token_ids=[]
    )
    assert torch.equal(got, expected[:, batch["input_ids"].shape[1] :])


@pytest.mark.integration
def test_export_import_round_trip(checkpoint, imported, tmp_path):
    family, path, reference, processor = checkpoint
    vlm = import_idefics3(str(path))  # frozen LM: its new-token rows are adapter-wrapped, merged by the export
    assert has_adapters(vlm)
    settings = Idefics3ProcessorSettings.from_pretrained(str(path))
    assert settings.family == family and settings.tile_size == SPECS[family]["tile"]
    export_idefics3(vlm, tmp_path, settings)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]

    again = import_idefics3(str(tmp_path), train_vision_encoder="full", train_language_model="full")
    original = imported.state_dict()
    assert set(again.state_dict()) == set(original)
    for key, value in again.state_dict().items():
        assert torch.equal(value, original[key]), key

    loaded, info = MODEL_CLASSES[family].from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    exported = AutoProcessor.from_pretrained(tmp_path)
    assert type(exported) is type(processor)
    assert exported.image_seq_len == processor.image_seq_len
    assert exported.chat_template == processor.chat_template
    assert exported.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert exported.image_processor.size == processor.image_processor.size
    assert exported.image_processor.max_image_size == processor.image_processor.max_image_size
    assert Idefics3ProcessorSettings.from_pretrained(str(tmp_path)) == settings
    eos = set(loaded.generation_config.eos_token_id)
    tokenizer = processor.tokenizer
    assert eos == {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE_TOKEN)}


@pytest.mark.integration
def test_exported_adapters_are_merged(checkpoint, tmp_path):
    family, path, _, processor = checkpoint
    vlm = import_idefics3(str(path), train_language_model=LoRA(rank=4, alpha=8, dropout=0.0)).eval()
    with torch.no_grad():  # LoRA B starts at 0: make the adapters change the function
        for name, param in vlm.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    batch = _batch(processor, splitting=True)
    with torch.no_grad():
        adapted = _vlmkit_logits(vlm, batch, SPECS[family]["patch"])
    export_idefics3(vlm, tmp_path, Idefics3ProcessorSettings.from_pretrained(str(path)))
    loaded = MODEL_CLASSES[family].from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = loaded(**batch).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(adapted[real], expected[real], atol=1e-4, rtol=0)


@pytest.mark.integration
@pytest.mark.parametrize("family", FAMILIES)
def test_a_vlmkit_composition_exports_with_equal_logits(family, tmp_path):
    """SigLIP + pixel shuffle + a Llama LM composed in vlmkit is an Idefics3 / SmolVLM checkpoint."""
    from tiny_models import TINY_SIGLIP
    from tiny_tokenizers import smolvlm_tokenizer

    from vlmkit.llm import TransformersCausalLM
    from vlmkit.model import VisionLanguageModel
    from vlmkit.vision import TransformersVisionEncoder

    torch.manual_seed(0)
    smolvlm_tokenizer().save_pretrained(tmp_path / "tokenizer")
    lm = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 1}  # fmt: skip
    vlm = VisionLanguageModel(
        TransformersVisionEncoder(config=TINY_SIGLIP, position_embedding="bucket"),
        functools.partial(PixelShuffleConnector, scale_factor=2),
        TransformersCausalLM(config=lm, tokenizer=str(tmp_path / "tokenizer")),
        train_vision_encoder="full",
        train_language_model="full",
        chat_template=SMOLVLM_CHAT_TEMPLATE,
        tile_size=32,
    ).eval()
    settings = Idefics3ProcessorSettings(family=family, tile_size=32, max_image_size=80)
    export_idefics3(vlm, tmp_path / "out", settings)
    loaded = MODEL_CLASSES[family].from_pretrained(tmp_path / "out").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}]
    batch = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs={"images": [images()[0]]},
    )  # fmt: skip
    ours = settings.vlm_processor(vlm)([images()[0]], _turns(messages), add_generation_prompt=True, split_images=True)
    assert ours["input_ids"].tolist() == batch["input_ids"][0].tolist()
    with torch.no_grad():
        expected = loaded(**batch).logits
        got = _vlmkit_logits(vlm, batch, TINY_SIGLIP["patch_size"])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def _turns(messages):
    from vlmkit.text import Turn

    return [Turn(m["role"], [c if c["type"] == "image" else c["text"] for c in m["content"]]) for m in messages]


@pytest.mark.integration
def test_export_names_what_is_not_idefics3(imported):
    from tiny_models import build_tiny_vlm

    with pytest.raises(ValueError, match="connector is 'PerceiverResampler', expected PixelShuffleConnector"):
        idefics3_config(build_tiny_vlm(train_language_model="full"))
    mlp = build_tiny_vlm(
        functools.partial(PixelShuffleConnector, projection="mlp"), train_language_model="full"
    )  # LLaVA-style MLP: Idefics3 has no place for it
    with pytest.raises(ValueError, match="not exportable as SmolVLM: connector.projection is 'mlp'"):
        idefics3_config(mlp, "smolvlm")
    assert idefics3_config(imported).scale_factor == imported.connector.scale_factor
    with pytest.raises(KeyError, match="no Idefics3 part"):
        vlmkit_to_idefics3_keys({"connector.latents": torch.zeros(1)})
    with pytest.raises(ValueError, match="settings.tile_size=40 but the model tiles with tile_size"):
        export_idefics3(imported, "unused", Idefics3ProcessorSettings(tile_size=40))


def _damaged_copy(checkpoint, tmp_path, edit):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "damaged"
    shutil.copytree(checkpoint[1], path)
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return str(path)


_PROJECTION = "model.connector.modality_projection.proj.weight"


def test_import_names_every_damaged_tensor(checkpoint, tmp_path):
    """Deleted, renamed, extra and reshaped tensors, all named in one error; nothing loads at random."""
    family = checkpoint[0]

    def edit(tensors):
        tensors[_PROJECTION.replace("proj.", "projection.")] = tensors.pop(_PROJECTION)  # renamed
        del tensors["model.text_model.norm.weight"]  # deleted
        tensors["model.connector.extra.weight"] = torch.zeros(3)  # extra
        layer = "model.vision_model.post_layernorm.weight"
        tensors[layer] = torch.zeros(tensors[layer].shape[0] + 1)  # wrong shape

    with pytest.raises(ValueError) as error:
        import_idefics3(_damaged_copy(checkpoint, tmp_path, edit))
    message = str(error.value)
    name = "SmolVLM" if family == "smolvlm" else "Idefics3"
    assert f"does not match its {name} config (nothing was loaded)" in message
    renamed = _PROJECTION.replace("proj.", "projection.")
    assert f"2 checkpoint tensors map to no model weight: model.connector.extra.weight, {renamed}" in message
    assert f"2 model weights are not in the checkpoint: {_PROJECTION}, model.text_model.norm.weight" in message
    width = SPECS[family]["vision"]["hidden_size"]
    assert f"model.vision_model.post_layernorm.weight ({width + 1},) (the model's is ({width},))" in message


def test_import_refuses_other_checkpoints_and_a_wrong_image_token(checkpoint, tmp_path):
    path = tmp_path / "broken"
    shutil.copytree(checkpoint[1], path)
    config = json.loads((path / "config.json").read_text())
    config["image_token_id"] = 3
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="image_token_id"):
        import_idefics3(str(path))
    with pytest.raises(ValueError, match="not 'idefics3' or 'smolvlm'"):
        import_idefics3(str(_an_idefics2(tmp_path)))


def _an_idefics2(tmp_path):
    from tiny_idefics2 import save_tiny_idefics2

    save_tiny_idefics2(tmp_path / "idefics2")
    return tmp_path / "idefics2"


def test_import_reads_sharded_checkpoints(checkpoint, imported, tmp_path):
    family = checkpoint[0]
    save_tiny(family, tmp_path, max_shard_size="60KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("*.safetensors"))) > 2
    vlm = import_idefics3(str(tmp_path), train_vision_encoder="full", train_language_model="full")
    got = vlm.state_dict()
    for key, value in imported.state_dict().items():  # the same seed: the same weights as the single file
        assert torch.equal(got[key], value), key


def test_settings_from_a_preprocessor_config():
    settings = Idefics3ProcessorSettings.from_dict(
        {
            "size": {"longest_edge": 2048},
            "max_image_size": {"longest_edge": 512},
            "rescale_factor": 1 / 127.5,
            "image_mean": [1, 1, 1],
            "image_std": [1, 1, 1],
            "do_image_splitting": True,
        },
        family="smolvlm",
    )
    # x / 127.5 - 1 == (x / 255 - 0.5) / 0.5
    assert settings.image_mean == pytest.approx((0.5,) * 3) and settings.image_std == pytest.approx((0.5,) * 3)
    assert (settings.tile_size, settings.max_image_size, settings.chat_template) == (512, 2048, SMOLVLM_CHAT_TEMPLATE)
    with pytest.raises(ValueError, match="do_resize=false"):
        Idefics3ProcessorSettings.from_dict({"do_resize": False})
    with pytest.raises(ValueError, match="need 'longest_edge'"):
        Idefics3ProcessorSettings.from_dict({"size": {"height": 10, "width": 10}})


@pytest.mark.integration
def test_qlora_import_quantizes_like_transformers_trains_adapters_and_exports(tmp_path):
    """nf4 after the strict load: the same 4-bit weights as ``from_pretrained(quantization_config=...)``."""
    from transformers import BitsAndBytesConfig

    from vlmkit.adapters import trainable_state_dict
    from vlmkit.quantization import quantized_kind
    from vlmkit.trainability import apply_trainability
    from vlmkit.training.module import answer_loss

    save_tiny("idefics3", tmp_path / "source")
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    reference = Idefics3ForConditionalGeneration.from_pretrained(tmp_path / "source", quantization_config=bnb)
    vlm = import_idefics3(
        str(tmp_path / "source"), quantization="nf4", compute_dtype="float32", train_language_model="lora"
    )
    ours = {n: m for n, m in vlm.language_model.model.model.named_modules() if quantized_kind(m) == "4bit"}
    theirs = {n: m for n, m in reference.model.text_model.named_modules() if quantized_kind(m) == "4bit"}
    assert {n.removesuffix(".base_layer") for n in ours} == set(theirs) and len(theirs) == 2 * 7  # q k v o gate up down
    for name, layer in ours.items():
        assert torch.equal(layer.weight.data, theirs[name.removesuffix(".base_layer")].weight.data), name
    assert quantized_kind(vlm.language_model.model.lm_head) is None
    with pytest.raises(
        ValueError, match="quantized weights cannot be trained"
    ):  # what train_language_model="full" runs
        apply_trainability(
            vlm.language_model, "full", "train_language_model", quantization=vlm.language_model.quantization
        )

    processor = AutoProcessor.from_pretrained(tmp_path / "source")
    sample = Idefics3ProcessorSettings.from_pretrained(str(tmp_path / "source")).vlm_processor(vlm)(
        images()[:1], _turns([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}])
        + [_answer("red")], split_images=False
    )  # fmt: skip
    from vlmkit.data import VLMCollator

    batch = VLMCollator(vlm.tokenizer.pad_token_id, SPECS["idefics3"]["patch"])([sample])
    before = {k: v.clone() for k, v in vlm.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        logits = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits
        answer_loss(logits, batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {k for k, v in vlm.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= set(trainable_state_dict(vlm)) and any("lora_B" in k for k in changed)
    vlm.eval()
    with torch.no_grad():
        adapted = _vlmkit_logits(vlm, _batch(processor, False), SPECS["idefics3"]["patch"])
    export_idefics3(vlm, tmp_path / "exported", Idefics3ProcessorSettings.from_pretrained(str(tmp_path / "source")))
    loaded = Idefics3ForConditionalGeneration.from_pretrained(tmp_path / "exported").eval()  # plain dequantized weights
    batch = _batch(processor, False)
    with torch.no_grad():
        expected = loaded(**batch).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(adapted[real], expected[real], atol=1e-4, rtol=0)


def _answer(text):
    from vlmkit.text import Turn

    return Turn("assistant", [text])
