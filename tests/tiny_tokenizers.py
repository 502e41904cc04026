"""Tiny offline tokenizers with the layouts of real LLM tokenizers (no download)."""

from __future__ import annotations

import json
from functools import lru_cache

CORPUS = [
    "User: What color is the circle? Assistant: red",
    "User: How many shapes are there in the image? Assistant: two",
    "System: You answer briefly. Describe the image. A photo of a blue square and a green triangle.",
    "Question: Which shape is red? Give a very brief answer. Answer: the circle",
    "Choices: A. red B. blue C. green Answer with the letter.",
]


@lru_cache(maxsize=1)
def _llama_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # split=True in training: merges stay inside words, as in a sentencepiece vocabulary
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256))]  # Llama: byte fallback
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 8, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def llama_tokenizer(add_bos_token: bool = True):
    """A ``LlamaTokenizer`` (Metaspace BPE, byte fallback, ``<s>``/``</s>``/``<unk>``), as Mistral's and Idefics2's."""
    from transformers import LlamaTokenizer

    vocab, merges = _llama_vocab_and_merges()
    return LlamaTokenizer(vocab=dict(vocab), merges=list(merges), add_bos_token=add_bos_token, legacy=False)


def _byte_level(specials: list[str]):
    """A byte-level BPE trained on the synthetic corpus with ``specials`` first (ids 0, 1, ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from vlmkit.data.synthetic import vocabulary_corpus

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=480,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*CORPUS * 8, *vocabulary_corpus() * 2], trainer=trainer)
    return tokenizer


def llama3_tokenizer():
    """A Llama-3-style tokenizer: byte-level BPE whose post-processor adds ``<|begin_of_text|>`` (Idefics3's LM)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    tokenizer = _byte_level(specials)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
    )
    end = "<|end_of_text|>"
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=specials[0], eos_token=end, pad_token=end)


def smolvlm_tokenizer():
    """A SmolVLM-style tokenizer (SmolLM2's byte-level BPE): BOS ``<|im_start|>`` (not added by the tokenizer: the chat
    template writes it), EOS ``<end_of_utterance>``, and the image tokens, crop markers and ``<global-img>`` as
    special tokens, as in HuggingFaceTB/SmolVLM-256M-Instruct."""
    from transformers import PreTrainedTokenizerFast

    markers = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    images = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    tokenizer = _byte_level(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=[*images, *markers],
    )
