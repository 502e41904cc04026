import pytest
import torch

from vlmkit.llm import TransformersCausalLM
from vlmkit.text import END_OF_UTTERANCE_TOKEN, IMAGE_TOKEN

FAMILIES = {
    "llama": ("llama", "LlamaDecoderLayer"),
    "mistral": ("mistral", "MistralDecoderLayer"),
    "qwen2": ("qwen2", "Qwen2DecoderLayer"),
}


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


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_families_expose_the_contract_and_grow_embeddings(family):
    torch.manual_seed(0)
    lm = TransformersCausalLM(config=tiny_config(family), tokenizer="synthetic")
    assert lm.hidden_size == 32
    assert lm.block_class.__name__ == FAMILIES[family][1]
    assert len(lm.decoder_layers()) == 2
    # the synthetic tokenizer plus image tokens outgrow vocab_size=300: embeddings follow
    assert lm.vocab_size == len(lm.tokenizer) > 300
    assert lm.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) < lm.vocab_size
    embeds = lm.get_input_embeddings()(torch.tensor([[1, 2, 3]]))
    out = lm(inputs_embeds=embeds)
    assert out.logits.shape == (1, 3, lm.vocab_size)


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
