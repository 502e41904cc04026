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
