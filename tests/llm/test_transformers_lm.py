import importlib.util

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_models import LM_FAMILIES, TINY_SIGLIP
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

from vlmkit.adapters import LoRA, merge_adapters
from vlmkit.connectors import MLPProjection
from vlmkit.data import VLMCollator, VLMProcessor
from vlmkit.data.sequence_packing import PackedCollator, pack
from vlmkit.fusion import CrossAttentionFusion
from vlmkit.llm import TransformersCausalLM
from vlmkit.model import VisionLanguageModel
from vlmkit.text import END_OF_UTTERANCE_TOKEN, IMAGE_TOKEN, Turn
from vlmkit.training.module import answer_loss
from vlmkit.vision import TransformersVisionEncoder

FAMILIES = sorted(LM_FAMILIES)
# families whose attention goes through transformers' AttentionInterface at call time (Falcon picks its attention
# class when built, so a stand-in kernel cannot be swapped in afterwards; the GPU test runs its real flash path)
INTERFACE_FAMILIES = [f for f in FAMILIES if f != "falcon"]


def tiny_config(model_type: str) -> dict:
    return {
        "model_type": model_type,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 300,
    }


def family_lm(family: str, **kwargs) -> TransformersCausalLM:
    torch.manual_seed(0)
    return TransformersCausalLM(
        config={"model_type": family, **LM_FAMILIES[family][0]}, tokenizer="synthetic", **kwargs
    )


def family_vlm(family: str, fusion=None, **kwargs) -> VisionLanguageModel:
    lm = family_lm(family)
    return VisionLanguageModel(TransformersVisionEncoder(config=TINY_SIGLIP), MLPProjection, lm, fusion, **kwargs)


IMAGES = [Image.new("RGB", (24, 16), (200, 0, 0)), Image.new("RGB", (16, 32), (0, 0, 200))]


def conversations(vlm) -> list[dict]:
    """Three rendered samples: image first, text around an image, and text only."""
    processor = VLMProcessor.from_model(vlm, max_image_size=32, min_image_size=16)
    contents = [
        ([IMAGES[0]], [{"type": "image"}, "What colour?"], "red"),
        ([IMAGES[1]], ["Look:", {"type": "image"}, "which shape is it?"], "a tall one"),
        ([], ["No image here, just text."], "fine"),
    ]
    return [
        processor(images, [Turn("user", content), Turn("assistant", [answer])]) for images, content, answer in contents
    ]


def lm_layers_with_linear(lm: TransformersCausalLM) -> int:
    from transformers.pytorch_utils import Conv1D

    return sum(isinstance(m, (torch.nn.Linear, Conv1D)) for m in lm.decoder_layers().modules())


@pytest.mark.parametrize("family", FAMILIES)
def test_families_expose_the_contract_and_grow_embeddings(family):
    lm = family_lm(family)
    _, block_class, layers_path = LM_FAMILIES[family]
    assert lm.hidden_size == 32
    assert lm.block_class.__name__ == block_class
    assert lm.decoder_layers() is lm.model.get_submodule(layers_path) and len(lm.decoder_layers()) == 2
    # the synthetic tokenizer plus image tokens outgrow vocab_size=300: embeddings follow
    assert lm.vocab_size == len(lm.tokenizer) > 300
    assert lm.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) < lm.vocab_size
    embeds = lm.get_input_embeddings()(torch.tensor([[1, 2, 3]]))
    out = lm(inputs_embeds=embeds)
    assert out.logits.shape == (1, 3, lm.vocab_size)


@pytest.mark.parametrize("fusion", ["autoregressive", "cross_attention"])
@pytest.mark.parametrize("family", FAMILIES)
def test_both_fusions_train_every_family(family, fusion):
    blocks = CrossAttentionFusion(every_n_layers=1, num_heads=4, gate_init=0.5) if fusion == "cross_attention" else None
    vlm = family_vlm(family, blocks, train_language_model="full")
    batch = VLMCollator(vlm.tokenizer.pad_token_id, 8)(conversations(vlm))
    logits = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits
    answer_loss(logits, batch["labels"]).backward()
    assert all(p.grad is not None and p.grad.any() for p in vlm.connector.parameters())  # images reached the loss
    for layer in vlm.language_model.decoder_layers():
        assert any(p.grad is not None and p.grad.any() for p in layer.parameters())
    if blocks is not None:  # one block per layer, each hooked in front of its layer and reading the images
        assert len(blocks.blocks) == 2 and all(block.kv_proj.weight.grad.any() for block in blocks.blocks)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_adapts_every_block_linear_layer_of_every_family(family):
    from peft.tuners.tuners_utils import BaseTunerLayer

    vlm = family_vlm(family, train_language_model=LoRA(rank=4, alpha=8, dropout=0.0))
    adapted = [m for m in vlm.language_model.modules() if isinstance(m, BaseTunerLayer)]
    assert len(adapted) == lm_layers_with_linear(family_lm(family)) > 0  # default targets: inside the blocks
    batch = VLMCollator(vlm.tokenizer.pad_token_id, 8)(conversations(vlm))
    inputs = batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]
    with torch.no_grad():
        for name, p in vlm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)  # a trained adapter
    answer_loss(vlm(*inputs).logits, batch["labels"]).backward()
    lora = [p for n, p in vlm.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None and p.grad.any() for p in lora)
    assert not any(
        p.requires_grad for n, p in vlm.language_model.named_parameters() if "lora_" not in n and "rows" not in n
    )
    vlm.eval()
    with torch.no_grad():
        adapted_logits = vlm(*inputs).logits
        merged_logits = merge_adapters(vlm)(*inputs).logits  # Conv1D (GPT-2) is merged transposed
    torch.testing.assert_close(merged_logits, adapted_logits, atol=1e-5, rtol=1e-5)


def packed_and_alone(vlm, samples):
    """Logits of every sample from its packed row, and alone ``[(packed [n, vocab], alone [n, vocab])]``."""
    lengths = [len(s["input_ids"]) for s in samples]
    collate = PackedCollator(vlm.tokenizer.pad_token_id, vlm.vision_encoder.patch_size)
    rows = list(pack(samples, lengths[0] + lengths[1]))  # [a b], [c + padding]
    packed = collate(rows)
    with torch.no_grad():
        logits = vlm(packed["input_ids"], packed["attention_mask"], packed["pixel_values"], packed["patch_mask"],
                     position_ids=packed["position_ids"], segment_ids=packed["segment_ids"]).logits  # fmt: skip
    starts = [(row, int(start)) for row, r in enumerate(rows) for start in (r["position_ids"] == 0).nonzero()]
    pairs = []
    for sample, (row, start) in zip(samples, starts):
        alone = collate([sample])
        with torch.no_grad():
            expected = vlm(alone["input_ids"], alone["attention_mask"], alone.get("pixel_values"),
                           alone.get("patch_mask")).logits[0]  # fmt: skip
        pairs.append((logits[row, start : start + len(sample["input_ids"])], expected))
    return pairs


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_rows_equal_samples_alone_in_every_family(family):
    vlm = family_vlm(family).eval()
    for got, expected in packed_and_alone(vlm, conversations(vlm)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _flash_varlen_stand_in(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """A stand-in for flash attention: no mask, causal attention within each ``cu_seq_lens_q`` sequence of the
    batch flattened to one stream (transformers' varlen call), or within each row without them."""
    assert attention_mask is None, "flash attention must not get a mask here (packed rows, or rows without padding)"
    b, h, s, d = query.shape
    cu_seq_lens = kwargs.get("cu_seq_lens_q", torch.arange(b + 1) * s)
    key = key.repeat_interleave(h // key.shape[1], 1)
    value = value.repeat_interleave(h // value.shape[1], 1)
    q, k, v = (x.transpose(1, 2).reshape(b * s, h, -1).transpose(0, 1) for x in (query, key, value))  # [h, b*s, d]
    sequence = torch.repeat_interleave(torch.arange(len(cu_seq_lens) - 1), cu_seq_lens.diff().long())  # [b*s]
    allowed = (sequence[:, None] == sequence[None]) & torch.ones(b * s, b * s, dtype=torch.bool).tril()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling)  # [h, b*s, d]
    return out.transpose(0, 1).reshape(b, s, h, -1), None


def use_attention(lm: TransformersCausalLM, name: str) -> None:
    """Switch a built LM to a registered attention function (every config object of the model)."""
    for config in {id(m.config): m.config for m in lm.model.modules() if hasattr(m, "config")}.values():
        config._attn_implementation = name


@pytest.mark.parametrize("family", INTERFACE_FAMILIES)
def test_flash_attention_gets_varlen_lengths_and_no_4d_mask(family, monkeypatch):
    name = "vlmkit_test_flash_varlen"  # "flash" in the name: transformers' flash test says yes
    monkeypatch.setitem(AttentionInterface._global_mapping, name, _flash_varlen_stand_in)
    monkeypatch.setitem(AttentionMaskInterface._global_mapping, name, flash_attention_mask)
    vlm = family_vlm(family).eval()
    samples = conversations(vlm)
    expected = [alone for _, alone in packed_and_alone(vlm, samples)]  # sdpa, each sample alone
    use_attention(vlm.language_model, name)
    seen = []
    vlm.language_model.model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs), with_kwargs=True)
    for (got, _), alone in zip(packed_and_alone(vlm, samples), expected):
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)
    packed = seen[0]  # the packed call; the others ran each sample alone
    n = [len(s["input_ids"]) for s in samples]
    width = n[0] + n[1]
    assert packed["attention_mask"] is None
    assert packed["position_ids"].tolist() == [[*range(n[0]), *range(n[1]), *range(width)]]  # rows flattened
    assert packed["cu_seq_lens_q"].tolist() == [0, n[0], width, width + n[2], 2 * width]  # padding on its own
    assert packed["max_length_q"] == max(n[0], n[1], width - n[2])


def test_packing_refuses_an_attention_that_takes_neither_mask_nor_lengths(monkeypatch):
    name = "vlmkit_test_padding_only"  # takes a 2-D padding mask only, like flash, but is not a flash kernel
    monkeypatch.setitem(AttentionInterface._global_mapping, name, _flash_varlen_stand_in)
    monkeypatch.setitem(AttentionMaskInterface._global_mapping, name, flash_attention_mask)
    vlm = family_vlm("llama").eval()
    use_attention(vlm.language_model, name)
    with pytest.raises(
        ValueError,
        match="LlamaForCausalLM cannot run packed rows: it runs attn_implementation='vlmkit_test_padding_only'",
    ):
        packed_and_alone(vlm, conversations(vlm))


@pytest.mark.parametrize(
    ("model_type", "config"),
    [
        ("falcon", {"alibi": True}),
        ("bloom", {"n_layer": 2, "n_head": 4, "hidden_size": 32}),
    ],
)
def test_packing_refuses_alibi_families(model_type, config):
    lm = TransformersCausalLM(
        config={"model_type": model_type, "vocab_size": 300, **LM_FAMILIES["falcon"][0], **config},
        tokenizer="synthetic",
        attn_implementation="eager",
    )
    embeds = lm.get_input_embeddings()(torch.tensor([[1, 2, 3, 4]]))
    with pytest.raises(ValueError, match="cannot run packed rows: its ALiBi attention bias"):
        lm(embeds, position_ids=torch.tensor([[0, 1, 0, 1]]), segment_ids=torch.tensor([[0, 0, 1, 1]]))
    assert lm(embeds).logits.shape[1] == 4  # unpacked it runs


def test_packing_refuses_a_model_that_takes_no_position_ids(monkeypatch):
    lm = family_lm("llama")
    monkeypatch.setattr(lm.model, "forward", lambda inputs_embeds=None, attention_mask=None, **kwargs: None)
    embeds = lm.get_input_embeddings()(torch.tensor([[1, 2, 3, 4]]))
    with pytest.raises(ValueError, match="LlamaForCausalLM cannot run packed rows: its forward takes no position_ids"):
        lm(embeds, position_ids=torch.tensor([[0, 1, 0, 1]]), segment_ids=torch.tensor([[0, 0, 1, 1]]))


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None, reason="needs CUDA and flash_attn"
)
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gpt_neox", "phi", "falcon"])
def test_flash_attention_2_packed_equals_unpacked_on_gpu(family):
    """bf16, flash_attention_2: packed rows (varlen kernel) give each sample's logits alone.

    Weights drawn with std 0.2 (attention then matters: logits of magnitude ~5). Tolerance atol 0.1: about three
    bf16 steps at that magnitude (the varlen and plain kernels tile differently; on CPU the bf16 4-D-mask path
    differs by up to 0.03). Treating a packed row as one sequence instead moves the logits by more than 2.
    """
    torch.manual_seed(0)
    config = {"model_type": family, **LM_FAMILIES[family][0], "initializer_range": 0.2}
    lm = TransformersCausalLM(
        config=config, tokenizer="synthetic", torch_dtype="bfloat16", attn_implementation="flash_attention_2"
    )
    lm = lm.cuda().eval()
    lengths = [37, 53, 20]
    embeds = [torch.randn(1, n, 32, device="cuda", dtype=torch.bfloat16) for n in lengths]
    width = lengths[0] + lengths[1]
    rows = torch.zeros(2, width, 32, device="cuda", dtype=torch.bfloat16)
    rows[0] = torch.cat([embeds[0][0], embeds[1][0]])
    rows[1, : lengths[2]] = embeds[2][0]
    position_ids = torch.tensor([[*range(37), *range(53)], list(range(width))], device="cuda")
    segment_ids = torch.tensor([[0] * 37 + [1] * 53, [0] * 20 + [-1] * 70], device="cuda")
    with torch.no_grad():
        packed = lm(rows, position_ids=position_ids, segment_ids=segment_ids).logits.float()
        alone = [lm(e, position_ids=torch.arange(e.shape[1], device="cuda")[None]).logits[0].float() for e in embeds]
        one_sequence = lm(rows, position_ids=torch.arange(width, device="cuda").expand(2, -1)).logits.float()
    got = [packed[0, :37], packed[0, 37:], packed[1, :20]]
    for g, a in zip(got, alone):
        torch.testing.assert_close(g, a, atol=0.1, rtol=0.0)
    assert (one_sequence[0, 37:] - alone[1]).abs().max() > 1.0


def test_inputs_embeds_path_equals_input_ids_path():
    torch.manual_seed(0)
    lm = TransformersCausalLM(config=tiny_config("mistral"), tokenizer="synthetic").eval()
    ids = torch.tensor([[1, 5, 9, 4]])
    direct = lm.model(input_ids=ids).logits
    assert torch.allclose(lm(inputs_embeds=lm.get_input_embeddings()(ids)).logits, direct)


def test_loads_a_saved_checkpoint_and_tokenizer_by_path(tmp_path):
    torch.manual_seed(0)
    lm = TransformersCausalLM(config=tiny_config("llama"), tokenizer="synthetic").eval()
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    loaded = TransformersCausalLM(name_or_path=str(tmp_path)).eval()
    assert loaded.tokenizer.get_vocab() == lm.tokenizer.get_vocab()
    assert loaded.vocab_size == lm.vocab_size  # tokens already present: no second resize
    ids = torch.tensor([[1, 5, 9, loaded.tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE_TOKEN)]])
    assert torch.equal(loaded.model(input_ids=ids).logits, lm.model(input_ids=ids).logits)


def test_a_checkpoint_loaded_by_path_starts_in_train_mode(tmp_path):
    # transformers' from_pretrained returns eval mode and Lightning's fit keeps each module's mode: without .train()
    # a backbone loaded by path would train with dropout (and LoRA dropout) silently off.
    config = {**tiny_config("llama"), "attention_dropout": 0.5}
    source = TransformersCausalLM(config=config, tokenizer="synthetic")
    source.model.save_pretrained(tmp_path)
    source.tokenizer.save_pretrained(tmp_path)
    loaded = TransformersCausalLM(name_or_path=str(tmp_path))
    assert [name for name, module in loaded.named_modules() if not module.training] == []
    ids = torch.tensor([[1, 5, 9, 7, 3]])
    assert not torch.equal(loaded.model(input_ids=ids).logits, loaded.model(input_ids=ids).logits)  # dropout is on


def test_pretrained_checkpoint_gets_image_tokens_with_mean_initialised_rows(tmp_path):
    from transformers import AutoModelForCausalLM

    from vlmkit.llm.transformers_lm import build_transformers_config
    from vlmkit.text import build_synthetic_tokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(build_transformers_config(tiny_config("qwen2") | {"vocab_size": 512}))
    base.save_pretrained(tmp_path)
    build_synthetic_tokenizer().save_pretrained(tmp_path)  # a tokenizer without the image tokens
    lm = TransformersCausalLM(name_or_path=str(tmp_path))
    assert lm.vocab_size == 512  # the 3 new tokens fit inside the checkpoint's padded vocabulary
    lm2_dir = tmp_path / "small"
    small = AutoModelForCausalLM.from_config(build_transformers_config(tiny_config("qwen2") | {"vocab_size": 450}))
    small.save_pretrained(lm2_dir)
    build_synthetic_tokenizer().save_pretrained(lm2_dir)
    grown = TransformersCausalLM(name_or_path=str(lm2_dir))
    assert grown.vocab_size == len(grown.tokenizer) > 450


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of name_or_path"),
        ({"config": {"hidden_size": 8}, "tokenizer": "synthetic"}, "language_model.config needs a 'model_type'"),
        ({"config": {"model_type": "not-a-model"}, "tokenizer": "synthetic"}, "unknown model_type 'not-a-model'"),
        ({"config": {"model_type": "llama"}}, "tokenizer is required"),
        (
            {"config": {"model_type": "llama"}, "tokenizer": "synthetic", "torch_dtype": "float99"},
            "torch_dtype='float99'",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformersCausalLM(**kwargs)


def test_reading_the_cache_of_an_output_without_one_does_not_warn(monkeypatch):
    """transformers >= 5.2x warns when ``past_key_values`` (an alias of ``cache``) is read; vlmkit never reads it."""
    from transformers.modeling_outputs import CausalLMOutputWithPast
    from transformers.utils import generic

    from vlmkit.llm.transformers_lm import output_cache

    warned = []
    monkeypatch.setattr(generic.logger, "warning_once", lambda *a, **k: warned.append(a))
    output = CausalLMOutputWithPast(logits=torch.zeros(1, 1, 2))
    assert output_cache(output) is None
    assert warned == []
    cached = CausalLMOutputWithPast(logits=torch.zeros(1, 1, 2), cache="kv")
    assert output_cache(cached) == "kv" and warned == []
